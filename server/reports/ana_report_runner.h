/* Report jobs: runs persisted in the local database, a bounded queue and
 * the generation threads; files written under a temporary name, fsynced
 * and renamed into REPORTS_DIR/<account>/. */
#ifndef ANA_REPORT_RUNNER_H
#define ANA_REPORT_RUNNER_H

#include "ana_arena.h"
#include "ana_error.h"
#include "ana_store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One run as stored. Strings are owned by whoever filled the struct. */
struct ana_report_run {
  char run_id[40];
  char report_id[40];
  const char *account_id;
  const char *state; /* pending, running, completed, failed, expired */
  const char *error; /* "" when none */
  const char *path;  /* the file; "" until completed */
  int attempts;
  int64_t size_bytes;
  int64_t created_at_ms, started_at_ms, finished_at_ms;
};

/* Writes the run's file at tmp_path (created; removed by the runner on
 * failure) and sets *extension (static, no dot). Runs on a generation
 * thread. 0, or a negative error with err filled (its message is the run's
 * error). */
typedef int (*ana_report_generate_fn)(void *ctx, const char *account_id, const char *report_id,
                                      const char *run_id, const char *tmp_path,
                                      const char **extension, struct ana_error *err);

struct ana_report_runner_options {
  struct ana_local_db *db;
  const char *reports_dir; /* copied */
  int workers, queue_max, retention_days, max_attempts;
  ana_report_generate_fn generate;
  void *ctx;
};

struct ana_report_runner;

/* Opens the runs, recovers those a stop interrupted (running -> pending, or
 * failed after max_attempts), removes temporary files left behind, and
 * starts the threads, which take the pending runs oldest first. NULL with
 * err filled. */
struct ana_report_runner *ana_report_runner_create(const struct ana_report_runner_options *o,
                                                   struct ana_error *err);
/* Stops the threads (a generation under way is abandoned: its run stays
 * `running` and runs again at the next start). NULL does nothing. */
void ana_report_runner_destroy(struct ana_report_runner *r);

/* Records a new pending run of the report (run_id filled, 36 chars + NUL)
 * and queues it: RESOURCE_EXHAUSTED when queue_max runs wait. Blocks. */
int ana_report_runner_submit(struct ana_report_runner *r, const char *account_id,
                             const char *report_id, char run_id[40], struct ana_error *err);

/* The report's runs, newest first, at most limit, strings in arena. Returns
 * how many or a negative error. */
int ana_report_runner_runs(struct ana_report_runner *r, const char *account_id,
                           const char *report_id, int limit, struct ana_arena *arena,
                           struct ana_report_run **out, struct ana_error *err);

/* One run of the report (NOT_FOUND when none), strings in arena. */
int ana_report_runner_get(struct ana_report_runner *r, const char *account_id,
                          const char *report_id, const char *run_id, struct ana_arena *arena,
                          struct ana_report_run *out, struct ana_error *err);

/* Runs waiting in the queue now. */
int ana_report_runner_queued(struct ana_report_runner *r);

#endif
