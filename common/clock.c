/* The one clock (ana_clock.h): clock_gettime read in one place. */
#include "ana_clock.h"

static struct timespec now_on(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return ts;
}

int64_t ana_clock_wall_ms(void) {
  struct timespec ts = now_on(CLOCK_REALTIME);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ana_clock_wall_ns(void) {
  struct timespec ts = now_on(CLOCK_REALTIME);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ana_clock_mono_ms(void) {
  struct timespec ts = now_on(CLOCK_MONOTONIC);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ana_clock_mono_ns(void) {
  struct timespec ts = now_on(CLOCK_MONOTONIC);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t ana_clock_mono_coarse_ms(void) {
  struct timespec ts = now_on(CLOCK_MONOTONIC_COARSE);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ana_clock_process_cpu_ns(pid_t pid) {
  clockid_t clk;
  struct timespec ts;
  if (clock_getcpuclockid(pid, &clk) != 0 || clock_gettime(clk, &ts) != 0)
    return -1;
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct timespec ana_clock_deadline(clockid_t clock, int64_t ms) {
  struct timespec ts = now_on(clock);
  if (ms < 0)
    ms = 0;
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

struct timespec ana_deadline_in_ms(int64_t ms) {
  return ana_clock_deadline(CLOCK_REALTIME, ms);
}
