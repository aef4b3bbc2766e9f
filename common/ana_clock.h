/* The one clock: the wall clock and the monotonic clock in milliseconds or
 * nanoseconds, and absolute deadlines for pthread_cond_timedwait (which
 * takes a time on the condition variable's clock, CLOCK_REALTIME unless
 * pthread_condattr_setclock chose another). Every module reads time here. */
#ifndef ANA_CLOCK_H
#define ANA_CLOCK_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME): timestamps. */
int64_t ana_clock_wall_ms(void);
/* Nanoseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t ana_clock_wall_ns(void);
/* Milliseconds of CLOCK_MONOTONIC: intervals and deadlines, which a step of
 * the wall clock must not stretch or cut. */
int64_t ana_clock_mono_ms(void);
/* Nanoseconds of CLOCK_MONOTONIC: latencies. */
int64_t ana_clock_mono_ns(void);
/* Milliseconds of CLOCK_MONOTONIC_COARSE (the last tick, 1-4 ms behind;
 * cheaper): for once-a-second decisions on every call, such as log
 * rate limits. */
int64_t ana_clock_mono_coarse_ms(void);
/* Nanoseconds of CPU time process pid has used (every thread, user and
 * system), or -1 when it cannot be read: benchmarks' server cost. */
int64_t ana_clock_process_cpu_ns(pid_t pid);

/* The time on clock ms milliseconds from now (ms < 0 reads as 0). */
struct timespec ana_clock_deadline(clockid_t clock, int64_t ms);
/* The CLOCK_REALTIME time ms milliseconds from now: for condition
 * variables with the default clock and pthread_timedjoin_np. */
struct timespec ana_deadline_in_ms(int64_t ms);

#endif
