/* A VFS over SQLite's default one that hands each commit's WAL frames to the
 * kernel in two writes. SQLite writes a frame as two calls (its 24-byte
 * header, then the page), so a commit of 25 pages cost 50 pwrite calls, the
 * largest CPU cost of a small commit after the fsync itself. A transaction's
 * first frame header is written as it comes; the writes that follow it are
 * gathered in a buffer and written when the frame that ends a commit is
 * complete (the WAL file format marks it: bytes 4-7 of its header hold the
 * database size), before any other use of the file (read, sync, size,
 * truncate, close), or when the buffer is full.
 * So nothing is ever visible to a reader, or synced, that the file does not
 * hold, whatever the connection's synchronous setting. Other files pass
 * straight through to the default VFS. */
#include "wal_write_vfs.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <string.h>

/* Larger commits are written in pieces of at most this size: the default
 * (unix) VFS writes less than 128 KiB per call (it masks the length to 17
 * bits, as its own writes are at most one 64 KiB page). */
#define GATHER_BYTES (124 * 1024)
#define FRAME_HEADER_BYTES 24

struct wal_file {
  sqlite3_file base; /* pMethods = &wal_methods */
  sqlite3_file *real;
  unsigned char *buf;  /* allocated on the first write */
  sqlite3_int64 start; /* file offset of buf[0] */
  int len;
  bool commit_frame; /* the last header gathered ends a commit */
};

static sqlite3_vfs wal_vfs;
static sqlite3_vfs *real_vfs;
static pthread_once_t register_once = PTHREAD_ONCE_INIT;
static int register_rc;

static int flush(struct wal_file *f) {
  if (f->len == 0)
    return SQLITE_OK;
  int rc = f->real->pMethods->xWrite(f->real, f->buf, f->len, f->start);
  f->len = 0; /* after a failure SQLite abandons the transaction's frames */
  f->commit_frame = false;
  return rc;
}

static int wal_close(sqlite3_file *file) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = flush(f);
  int close_rc = f->real->pMethods->xClose(f->real);
  sqlite3_free(f->buf);
  f->buf = NULL;
  return rc != SQLITE_OK ? rc : close_rc;
}

static int wal_read(sqlite3_file *file, void *out, int amt, sqlite3_int64 off) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, out, amt, off);
}

static bool is_commit_header(const void *data, int amt) {
  const unsigned char *h = data;
  return amt == FRAME_HEADER_BYTES && (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int wal_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off) {
  struct wal_file *f = (struct wal_file *)file;
  /* The page after a commit frame's header completes the commit (decided
   * before a flush below forgets the header). */
  bool ends_commit = f->commit_frame && amt != FRAME_HEADER_BYTES;
  bool follows = f->len > 0 && off == f->start + f->len && f->len + amt <= GATHER_BYTES;
  if (!follows) {
    int rc = flush(f);
    if (rc != SQLITE_OK)
      return rc;
    /* A frame header that does not extend gathered frames is written at
     * once: it may rewrite a header already in the file (SQLite recomputes
     * the checksums of a transaction that overwrote one of its own frames),
     * and then no page follows it. */
    if (amt == FRAME_HEADER_BYTES || amt > GATHER_BYTES ||
        (!f->buf && !(f->buf = sqlite3_malloc(GATHER_BYTES)))) {
      rc = f->real->pMethods->xWrite(f->real, data, amt, off);
      f->commit_frame = rc == SQLITE_OK && is_commit_header(data, amt);
      return rc;
    }
    f->start = off;
  }
  memcpy(f->buf + f->len, data, (size_t)amt);
  f->len += amt;
  f->commit_frame = is_commit_header(data, amt);
  return ends_commit ? flush(f) : SQLITE_OK;
}

static int wal_truncate(sqlite3_file *file, sqlite3_int64 size) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int wal_sync(sqlite3_file *file, int flags) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int wal_file_size(sqlite3_file *file, sqlite3_int64 *size) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int wal_lock(sqlite3_file *file, int level) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xLock(f->real, level);
}

static int wal_unlock(sqlite3_file *file, int level) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xUnlock(f->real, level);
}

static int wal_check_reserved_lock(sqlite3_file *file, int *out) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wal_file_control(sqlite3_file *file, int op, void *arg) {
  struct wal_file *f = (struct wal_file *)file;
  int rc = flush(f);
  return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wal_sector_size(sqlite3_file *file) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xSectorSize(f->real);
}

static int wal_device_characteristics(sqlite3_file *file) {
  struct wal_file *f = (struct wal_file *)file;
  return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* Version 1: SQLite maps shared memory and pages through the database file,
 * never through its WAL. */
static const sqlite3_io_methods wal_methods = {
    .iVersion = 1,
    .xClose = wal_close,
    .xRead = wal_read,
    .xWrite = wal_write,
    .xTruncate = wal_truncate,
    .xSync = wal_sync,
    .xFileSize = wal_file_size,
    .xLock = wal_lock,
    .xUnlock = wal_unlock,
    .xCheckReservedLock = wal_check_reserved_lock,
    .xFileControl = wal_file_control,
    .xSectorSize = wal_sector_size,
    .xDeviceCharacteristics = wal_device_characteristics,
};

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags,
                    int *out_flags) {
  (void)vfs;
  if (!(flags & SQLITE_OPEN_WAL))
    return real_vfs->xOpen(real_vfs, name, file, flags, out_flags);
  struct wal_file *f = (struct wal_file *)file;
  memset(f, 0, sizeof *f);
  f->real = (sqlite3_file *)(f + 1);
  int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
  /* On failure pMethods stays NULL, so SQLite will not call xClose. */
  if (rc == SQLITE_OK && f->real->pMethods)
    f->base.pMethods = &wal_methods;
  return rc;
}

/* The rest of the VFS is the default one's. */
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync_dir) {
  (void)v;
  return real_vfs->xDelete(real_vfs, name, sync_dir);
}
static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return real_vfs->xAccess(real_vfs, name, flags, out);
}
static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out) {
  (void)v;
  return real_vfs->xFullPathname(real_vfs, name, n, out);
}
static int vfs_randomness(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real_vfs->xRandomness(real_vfs, n, out);
}
static int vfs_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return real_vfs->xSleep(real_vfs, us);
}
static int vfs_current_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return real_vfs->xCurrentTime(real_vfs, out);
}
static int vfs_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return real_vfs->xCurrentTimeInt64(real_vfs, out);
}
static int vfs_get_last_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real_vfs->xGetLastError(real_vfs, n, out);
}
static void *vfs_dl_open(sqlite3_vfs *v, const char *name) {
  (void)v;
  return real_vfs->xDlOpen(real_vfs, name);
}
static void vfs_dl_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  real_vfs->xDlError(real_vfs, n, out);
}
static void (*vfs_dl_sym(sqlite3_vfs *v, void *lib, const char *symbol))(void) {
  (void)v;
  return real_vfs->xDlSym(real_vfs, lib, symbol);
}
static void vfs_dl_close(sqlite3_vfs *v, void *lib) {
  (void)v;
  real_vfs->xDlClose(real_vfs, lib);
}

static void register_vfs(void) {
  real_vfs = sqlite3_vfs_find(NULL);
  if (!real_vfs || real_vfs->iVersion < 2) {
    register_rc = SQLITE_ERROR;
    return;
  }
  wal_vfs = (sqlite3_vfs){
      .iVersion = 2,
      .szOsFile = (int)sizeof(struct wal_file) + real_vfs->szOsFile,
      .mxPathname = real_vfs->mxPathname,
      .zName = ANA_WAL_WRITE_VFS,
      .xOpen = vfs_open,
      .xDelete = vfs_delete,
      .xAccess = vfs_access,
      .xFullPathname = vfs_full_pathname,
      .xDlOpen = vfs_dl_open,
      .xDlError = vfs_dl_error,
      .xDlSym = vfs_dl_sym,
      .xDlClose = vfs_dl_close,
      .xRandomness = vfs_randomness,
      .xSleep = vfs_sleep,
      .xCurrentTime = vfs_current_time,
      .xGetLastError = vfs_get_last_error,
      .xCurrentTimeInt64 = vfs_current_time_int64,
  };
  register_rc = sqlite3_vfs_register(&wal_vfs, 0);
}

const char *ana_wal_write_vfs(void) {
  pthread_once(&register_once, register_vfs);
  return register_rc == SQLITE_OK ? ANA_WAL_WRITE_VFS : NULL;
}
