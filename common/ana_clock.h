/* Deadlines for pthread_cond_timedwait, which takes an absolute
 * CLOCK_REALTIME time. */
#ifndef ANA_CLOCK_H
#define ANA_CLOCK_H

#include <stdint.h>
#include <time.h>

/* The CLOCK_REALTIME time ms milliseconds from now. */
struct timespec ana_deadline_in_ms(int64_t ms);

#endif
