/* Report jobs: the runs table (migration 8), a bounded queue of run ids and
 * the generation threads, at a lower priority than the rest of the process.
 * A file is written under a temporary name, fsynced, renamed into
 * REPORTS_DIR/<account>/<run>.<ext> and its directory fsynced: a partial
 * file never has a served name. */
#include "ana_local_db.h"
#include "ana_report_runner.h"

#include "ana_id.h"
#include "ana_log.h"
#include "ana_clock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 64
#define EXPIRE_EVERY_MS (10 * 60 * 1000)
#define TMP_PREFIX ".tmp-"
#define NICE 10
/* Free bytes below which a failed generation is put down to a full disk. */
#define FULL_BYTES (64 * 1024)

struct ana_report_runner {
  struct ana_report_runner_options o;
  char *dir;
  struct ana_local_runs *runs;
  pthread_mutex_t lock; /* the queue */
  pthread_cond_t cond;
  char (*queue)[40]; /* ring of run ids */
  size_t cap, head, len;
  bool stopping;
  int64_t next_expiry_ms;
  pthread_t threads[MAX_THREADS];
  int n_threads;
};

/* The account's folder name: the id with anything but [A-Za-z0-9_.-] as
 * '_' and no leading dot. */
static void account_dir(const struct ana_report_runner *r, const char *account, char *buf,
                        size_t size) {
  int n = snprintf(buf, size, "%s/", r->dir);
  for (const char *p = account; *p && (size_t)n + 2 < size; p++, n++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || (c == '.' && p != account);
    buf[n] = ok ? c : '_';
  }
  buf[n] = '\0';
}

static int make_dir(const char *path) {
  return mkdir(path, 0750) == 0 || errno == EEXIST ? 0 : -1;
}

static int fsync_path(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  int e = errno;
  close(fd);
  errno = e;
  return rc;
}

/* Marks a run's end. */
static void finish_run(struct ana_report_runner *r, const char *run_id, const char *state,
                       const char *error, const char *path, int64_t size) {
  struct ana_error err;
  if (ana_local_runs_finish(r->runs, run_id, state, error, path, size, ana_clock_wall_ms(), &err) <
      0)
    ANA_WARN("reports", "run %s: %s", run_id, err.message);
}

/* Takes a queued run: running, one more attempt. Returns false when the run
 * is gone or not pending any more. */
static bool start_run(struct ana_report_runner *r, const char *run_id, char *account,
                      size_t acc_size, char *report, size_t rep_size) {
  return ana_local_runs_start(r->runs, run_id, ana_clock_wall_ms(), account, acc_size, report,
                              rep_size);
}

static void generate(struct ana_report_runner *r, const char *run_id) {
  char account[256], report[64];
  if (!start_run(r, run_id, account, sizeof account, report, sizeof report))
    return;
  char dir[4096], tmp[4200], final[4200];
  account_dir(r, account, dir, sizeof dir);
  struct ana_error err;
  ana_error_clear(&err);
  const char *ext = "bin";
  if (make_dir(dir) < 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "cannot create %.400s: %s", dir, strerror(errno));
    finish_run(r, run_id, "failed", msg, "", 0);
    return;
  }
  snprintf(tmp, sizeof tmp, "%s/" TMP_PREFIX "%s", dir, run_id);
  int64_t t0 = ana_clock_wall_ms();
  int rc = r->o.generate(r->o.ctx, account, report, run_id, tmp, &ext, &err);
  if (rc == 0 && fsync_path(tmp, O_RDONLY) < 0)
    rc = ana_error_set(&err, ANA_STATUS_UNAVAILABLE, "cannot write the file: %s", strerror(errno));
  snprintf(final, sizeof final, "%s/%s.%s", dir, run_id, ext);
  if (rc == 0 && rename(tmp, final) < 0)
    rc = ana_error_set(&err, ANA_STATUS_UNAVAILABLE, "cannot rename the file: %s", strerror(errno));
  if (rc == 0)
    (void)fsync_path(dir, O_RDONLY | O_DIRECTORY);
  struct stat sb;
  if (rc == 0 && stat(final, &sb) < 0)
    rc = ana_error_set(&err, ANA_STATUS_UNAVAILABLE, "the file vanished: %s", strerror(errno));
  if (rc < 0) {
    /* A full disk shows in the writer's error only as its library's code:
     * say so, measured before the partial file goes. */
    struct statvfs vfs;
    if (statvfs(dir, &vfs) == 0 && (uint64_t)vfs.f_bavail * vfs.f_frsize < FULL_BYTES) {
      char detail[sizeof err.message];
      snprintf(detail, sizeof detail, "%s", err.message);
      ana_error_set(&err, ANA_STATUS_RESOURCE_EXHAUSTED,
                    "no space left on the disk of REPORTS_DIR (%llu KiB free): %s",
                    (unsigned long long)vfs.f_bavail * vfs.f_frsize / 1024, detail);
    }
    unlink(tmp);
    ANA_WARN("reports", "run %s of report %s failed: %s", run_id, report, err.message);
    finish_run(r, run_id, "failed", err.message[0] ? err.message : "generation failed", "", 0);
    return;
  }
  ANA_INFO("reports", "run %s of report %s: %lld bytes in %lld ms", run_id, report,
           (long long)sb.st_size, (long long)(ana_clock_wall_ms() - t0));
  finish_run(r, run_id, "completed", "", final, (int64_t)sb.st_size);
}

static void remove_file(void *ctx, const char *path) {
  (void)ctx;
  if (unlink(path) < 0 && errno != ENOENT)
    ANA_WARN("reports", "cannot remove %s: %s", path, strerror(errno));
}

/* Removes the files of runs completed before the retention cutoff. */
static void expire(struct ana_report_runner *r) {
  int64_t cutoff = ana_clock_wall_ms() - (int64_t)r->o.retention_days * 86400000;
  ana_local_runs_expire(r->runs, cutoff, remove_file, NULL);
}

static void *worker(void *arg) {
  pthread_setname_np(pthread_self(), "ana-report"); /* top -H, /proc/PID/task/TID/comm */
  struct ana_report_runner *r = arg;
  /* This thread only (Linux: the nice value is per thread). */
  (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), NICE);
  pthread_mutex_lock(&r->lock);
  while (!r->stopping) {
    int64_t now = ana_clock_wall_ms();
    if (now >= r->next_expiry_ms) {
      r->next_expiry_ms = now + EXPIRE_EVERY_MS;
      pthread_mutex_unlock(&r->lock);
      expire(r);
      pthread_mutex_lock(&r->lock);
      continue;
    }
    if (r->len == 0) {
      struct timespec ts = ana_deadline_in_ms(5000);
      pthread_cond_timedwait(&r->cond, &r->lock, &ts);
      continue;
    }
    char id[40];
    memcpy(id, r->queue[r->head], sizeof id);
    r->head = (r->head + 1) % r->cap;
    r->len--;
    pthread_mutex_unlock(&r->lock);
    generate(r, id);
    pthread_mutex_lock(&r->lock);
  }
  pthread_mutex_unlock(&r->lock);
  return NULL;
}

/* Queues a run id (lock held); grows past cap only for recovered runs. */
static int push(struct ana_report_runner *r, const char *id, bool force) {
  if (r->len == r->cap) {
    if (!force)
      return -1;
    size_t cap = r->cap * 2;
    char(*q)[40] = malloc(cap * sizeof *q);
    if (!q)
      return -1;
    for (size_t i = 0; i < r->len; i++)
      memcpy(q[i], r->queue[(r->head + i) % r->cap], sizeof q[i]);
    free(r->queue);
    r->queue = q, r->cap = cap, r->head = 0;
  }
  snprintf(r->queue[(r->head + r->len) % r->cap], 40, "%s", id);
  r->len++;
  pthread_cond_signal(&r->cond);
  return 0;
}

/* Removes the temporary files a stop left in REPORTS_DIR/<account>/. */
static void sweep_tmp(const char *dir) {
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
      continue;
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/%s", dir, e->d_name);
    DIR *s = opendir(sub);
    if (!s)
      continue;
    struct dirent *f;
    while ((f = readdir(s))) {
      if (strncmp(f->d_name, TMP_PREFIX, strlen(TMP_PREFIX)) != 0)
        continue;
      char p[8400];
      snprintf(p, sizeof p, "%s/%s", sub, f->d_name);
      unlink(p);
    }
    closedir(s);
  }
  closedir(d);
}

/* After a stop: runs left running run again, or fail after max_attempts;
 * every pending run is queued, oldest first. */
static int push_pending(void *ctx, const char *run_id) {
  return push(ctx, run_id, true);
}

static int recover(struct ana_report_runner *r, struct ana_error *err) {
  char msg[256];
  snprintf(msg, sizeof msg,
           "generation was interrupted %d times (the server stopped while it ran); giving up",
           r->o.max_attempts);
  int n = ana_local_runs_recover(r->runs, r->o.max_attempts, msg, ana_clock_wall_ms(), push_pending,
                                 r, err);
  if (n < 0)
    return n;
  if (n)
    ANA_INFO("reports", "%d report runs resumed", n);
  return 0;
}

struct ana_report_runner *ana_report_runner_create(const struct ana_report_runner_options *o,
                                                   struct ana_error *err) {
  struct ana_report_runner *r = calloc(1, sizeof *r);
  if (!r) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  r->o = *o;
  r->dir = strdup(o->reports_dir);
  r->cap = (size_t)(o->queue_max > 0 ? o->queue_max : 1);
  r->queue = calloc(r->cap, sizeof *r->queue);
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->cond, NULL);
  if (!r->dir || !r->queue) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if (!(r->runs = ana_local_runs_open(o->db, err)))
    goto fail;
  if (make_dir(r->dir) < 0) {
    ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION, "REPORTS_DIR: cannot create %s: %s", r->dir,
                  strerror(errno));
    goto fail;
  }
  sweep_tmp(r->dir);
  if (recover(r, err) < 0)
    goto fail;
  int n = o->workers < 1 ? 1 : o->workers > MAX_THREADS ? MAX_THREADS : o->workers;
  for (int i = 0; i < n; i++) {
    if (pthread_create(&r->threads[i], NULL, worker, r) != 0)
      break;
    r->n_threads++;
  }
  if (r->n_threads == 0) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "cannot start the report threads");
    goto fail;
  }
  return r;
fail:
  ana_report_runner_destroy(r);
  return NULL;
}

void ana_report_runner_destroy(struct ana_report_runner *r) {
  if (!r)
    return;
  pthread_mutex_lock(&r->lock);
  r->stopping = true;
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->lock);
  for (int i = 0; i < r->n_threads; i++)
    pthread_join(r->threads[i], NULL);
  ana_local_runs_close(r->runs);
  pthread_cond_destroy(&r->cond);
  pthread_mutex_destroy(&r->lock);
  free(r->queue);
  free(r->dir);
  free(r);
}

int ana_report_runner_submit(struct ana_report_runner *r, const char *account_id,
                             const char *report_id, char run_id[40], struct ana_error *err) {
  if (ana_uuid7_generate(run_id) < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "cannot make an id");
  pthread_mutex_lock(&r->lock);
  if (r->len >= (size_t)r->o.queue_max) {
    pthread_mutex_unlock(&r->lock);
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED,
                         "%d report runs are waiting (REPORT_QUEUE_MAX); retry later",
                         r->o.queue_max);
  }
  int rc = ana_local_runs_insert(r->runs, run_id, account_id, report_id, ana_clock_wall_ms(), err);
  if (rc == 0)
    push(r, run_id, false);
  pthread_mutex_unlock(&r->lock);
  return rc;
}

struct fill_ctx {
  struct ana_arena *a;
  struct ana_report_run *runs;
  int n;
};

static void fill(void *ctx, const struct ana_local_run *from) {
  struct fill_ctx *f = ctx;
  struct ana_report_run *run = &f->runs[f->n++];
  memset(run, 0, sizeof *run);
  snprintf(run->run_id, sizeof run->run_id, "%s", from->run_id);
  snprintf(run->report_id, sizeof run->report_id, "%s", from->report_id);
  run->account_id = ana_arena_strdup(f->a, from->account_id);
  run->state = ana_arena_strdup(f->a, from->state);
  run->attempts = from->attempts;
  run->error = ana_arena_strdup(f->a, from->error);
  run->path = ana_arena_strdup(f->a, from->path);
  run->size_bytes = from->size_bytes;
  run->created_at_ms = from->created_at_ms;
  run->started_at_ms = from->started_at_ms;
  run->finished_at_ms = from->finished_at_ms;
}

int ana_report_runner_runs(struct ana_report_runner *r, const char *account_id,
                           const char *report_id, int limit, struct ana_arena *arena,
                           struct ana_report_run **out, struct ana_error *err) {
  *out = ana_arena_calloc(arena, (size_t)(limit > 0 ? limit : 1), sizeof **out);
  if (!*out)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  struct fill_ctx f = {arena, *out, 0};
  return ana_local_runs_list(r->runs, account_id, report_id, limit, fill, &f, err);
}

int ana_report_runner_get(struct ana_report_runner *r, const char *account_id,
                          const char *report_id, const char *run_id, struct ana_arena *arena,
                          struct ana_report_run *out, struct ana_error *err) {
  struct fill_ctx f = {arena, out, 0};
  int rc = ana_local_runs_get(r->runs, account_id, report_id, run_id, fill, &f, err);
  if (rc < 0)
    return rc;
  if (rc == 0)
    return ana_error_set(err, ANA_STATUS_NOT_FOUND, "runId: run %.64s of this report not found",
                         run_id);
  return 0;
}

int ana_report_runner_queued(struct ana_report_runner *r) {
  pthread_mutex_lock(&r->lock);
  int n = (int)r->len;
  pthread_mutex_unlock(&r->lock);
  return n;
}
