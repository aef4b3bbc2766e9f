/* Small helpers the C test suites share: sleeping, a free loopback port,
 * detached threads, seconds on the monotonic clock. */
#ifndef ANA_TEST_UTIL_H
#define ANA_TEST_UTIL_H

/* Sleeps ms milliseconds (nanosleep; a signal may cut it short). */
void ana_test_sleep_ms(long ms);
/* A loopback TCP port with nothing listening (bound, read, released), or -1. */
int ana_test_unused_port(void);
/* Runs fn(arg) on a detached thread. */
void ana_test_detach(void *(*fn)(void *), void *arg);
/* Seconds of the monotonic clock (ana_clock_mono_ns), for timing a test. */
double ana_test_now_s(void);

#endif
