/* Progress beats of the server's long-lived threads, read by the liveness check. */
#ifndef ANA_HEARTBEAT_H
#define ANA_HEARTBEAT_H

#include <stddef.h>
#include <stdint.h>

/* At most this many threads beat at once; registering more returns NULL. */
#define ANA_HEARTBEAT_MAX 64

/* One thread's beat. Opaque; owned by the registry (a static table). */
struct ana_heartbeat;

/* Registers a thread under name (copied, cut at 31 bytes) and beats it once.
 * Returns NULL when the table is full; every other function accepts NULL and
 * then does nothing. Thread-safe. */
struct ana_heartbeat *ana_heartbeat_register(const char *name);

/* Records progress now: one relaxed atomic store, cheap enough for every
 * loop turn. A thread that waits for work must wake at least every few
 * seconds (timed waits) and beat, so idle is not mistaken for stuck. */
void ana_heartbeat_beat(struct ana_heartbeat *hb);

/* Removes the thread from the table (it is ending). Thread-safe. */
void ana_heartbeat_unregister(struct ana_heartbeat *hb);

/* Milliseconds since the least recent beat of any registered thread (0 when
 * none is registered); its name is copied into name (size bytes) when name
 * is not NULL. Thread-safe. */
int64_t ana_heartbeat_oldest_ms(char *name, size_t size);

/* CLOCK_MONOTONIC in milliseconds, the clock of every beat. */
int64_t ana_heartbeat_now_ms(void);

#endif
