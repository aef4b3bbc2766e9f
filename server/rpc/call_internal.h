/* The call runtime's own internals (server/rpc only): what call.c shares
 * with rpc_metrics.c. Transports use ana_call_transport.h. */
#ifndef ANA_CALL_INTERNAL_H
#define ANA_CALL_INTERNAL_H

#include "ana_call_transport.h"

/* Metrics of calls (rpc_metrics.c): per transport and method, requests by
 * status, latency from set-up to finish, calls and streams open. Called by
 * ana_call_init, ana_call_finish and ana_call_fini; thread-safe. */
void ana_rpc_metrics_started(struct ana_call *call);
void ana_rpc_metrics_finished(struct ana_call *call, const struct ana_error *status);
void ana_rpc_metrics_closed(struct ana_call *call);

#endif
