/* Services every server offers beside its own: grpc.health.v1 and server
 * reflection (v1 and v1alpha). */
#ifndef ANA_BUILTIN_SERVICES_H
#define ANA_BUILTIN_SERVICES_H

#include <stdbool.h>

/* Binds Health/Check and Health/Watch. The server starts NOT_SERVING. */
void ana_health_bind(void);

/* Readiness: sets the status of the whole server (service "", and every
 * service in it) and pushes it to open Watch streams. Thread-safe. */
void ana_health_set_serving(bool serving);

/* The service name of liveness: NOT_SERVING only while a server thread is
 * stuck (a restart helps), never for a full disk or a slow dependency. */
#define ANA_HEALTH_LIVENESS "liveness"

/* Sets liveness (SERVING from the start) and pushes it to open Watch streams
 * of ANA_HEALTH_LIVENESS. Thread-safe. */
void ana_health_set_live(bool live);

/* Binds ServerReflectionInfo (v1 and v1alpha). Returns 0, or a negative
 * error when the embedded descriptor set cannot be read. */
int ana_reflection_bind(void);
void ana_reflection_fini(void);

#endif
