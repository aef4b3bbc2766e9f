/* What the service files share: running a handler on the worker pool,
 * failing a call with a field's violation, and the pages of a listing. */
#ifndef ANA_SERVICE_JOBS_H
#define ANA_SERVICE_JOBS_H

#include "ana_call.h"
#include "ana_error.h"
#include "ana_workers.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A handler body that runs on the worker pool. */
typedef void (*ana_service_job_fn)(struct ana_call *call, const ProtobufCMessage *request);

/* Runs fn(call, request) on workers (borrowed). The job lives in the call's
 * arena; call and request are borrowed by the job until it has run. When the
 * job cannot be queued the call fails with RESOURCE_EXHAUSTED ("out of
 * memory", or "the server is busy; retry later" when the pool's queue is
 * full). Never blocks. */
void ana_service_submit(struct ana_workers *workers, struct ana_call *call,
                        const ProtobufCMessage *request, ana_service_job_fn fn);

/* Defines the handler `name` (an ana_handler's on_request) that runs fn on
 * the pool `workers` (an expression read on every call, such as
 * opts.workers). */
#define ANA_SERVICE_ASYNC(name, fn, workers)                                                       \
  static void name(struct ana_call *call, const ProtobufCMessage *request) {                       \
    ana_service_submit((workers), call, request, fn);                                              \
  }

/* Finishes call with err (borrowed); an INVALID_ARGUMENT's field, the part
 * of the message before ": ", is also a violation (google.rpc.BadRequest). */
void ana_service_fail(struct ana_call *call, const struct ana_error *err);

/* A listing's page size from the request's pageSize: def for 0, page_size
 * when it is 1 to max. Otherwise fails call with INVALID_ARGUMENT
 * "pageSize: must be between 0 and <max>" and returns 0 (the call is gone).
 * A listing then reads size + 1 items: the one past the page tells that
 * another page follows (ana_service_page_more). */
size_t ana_service_page_size(struct ana_call *call, int32_t page_size, size_t def, size_t max);

/* After a listing read *n of at most size + 1 items: true when another page
 * follows, with *n cut to size; the id of item size - 1, the page's last, is
 * then the next page token, which the store takes back as the id to list
 * after. */
bool ana_service_page_more(size_t *n, size_t size);

#endif
