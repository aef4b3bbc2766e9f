/* The service files' shared plumbing: worker-pool dispatch, failing a call
 * with a field's violation, and listing pages. */
#include "service_jobs.h"

#include <stdio.h>
#include <string.h>

struct job {
  struct ana_call *call;
  const ProtobufCMessage *request;
  ana_service_job_fn fn;
};

static void run_job(void *arg) {
  struct job *j = arg;
  j->fn(j->call, j->request);
}

void ana_service_submit(struct ana_workers *workers, struct ana_call *call,
                        const ProtobufCMessage *request, ana_service_job_fn fn) {
  struct job *j = ana_arena_alloc(ana_call_arena(call), sizeof *j);
  if (!j) {
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  *j = (struct job){call, request, fn};
  if (ana_workers_submit(workers, run_job, j) < 0)
    ana_call_fail(call, ANA_STATUS_RESOURCE_EXHAUSTED, "the server is busy; retry later");
}

void ana_service_fail(struct ana_call *call, const struct ana_error *err) {
  if (err->code == ANA_STATUS_INVALID_ARGUMENT) {
    const char *colon = strstr(err->message, ": ");
    if (colon) {
      char field[256];
      snprintf(field, sizeof field, "%.*s", (int)(colon - err->message), err->message);
      ana_call_add_violation(call, field, colon + 2);
    }
  }
  ana_call_finish(call, NULL, err);
}

size_t ana_service_page_size(struct ana_call *call, int32_t page_size, size_t def, size_t max) {
  if (page_size < 0 || (size_t)page_size > max) {
    struct ana_error err;
    ana_error_set(&err, ANA_STATUS_INVALID_ARGUMENT, "pageSize: must be between 0 and %zu", max);
    ana_service_fail(call, &err);
    return 0;
  }
  return page_size ? (size_t)page_size : def;
}

bool ana_service_page_more(size_t *n, size_t size) {
  if (*n <= size)
    return false;
  *n = size;
  return true;
}
