/* Services every server offers beside its own: grpc.health.v1 and server
 * reflection (v1 and v1alpha). */
#ifndef ANA_BUILTIN_SERVICES_H
#define ANA_BUILTIN_SERVICES_H

#include <stdbool.h>

/* Binds Health/Check and Health/Watch. The server starts NOT_SERVING. */
void ana_health_bind(void);

/* Sets the status of the whole server (and of every service in it) and
 * pushes it to open Watch streams. Thread-safe. */
void ana_health_set_serving(bool serving);

/* Binds ServerReflectionInfo (v1 and v1alpha). Returns 0, or a negative
 * error when the embedded descriptor set cannot be read. */
int ana_reflection_bind(void);
void ana_reflection_fini(void);

#endif
