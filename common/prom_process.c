/* The process families every Prometheus client library exports (process_*)
 * and a program's build_info, as one ana_prom collector: CPU seconds,
 * resident and virtual memory, open and maximum file descriptors (from
 * getrusage, /proc/self and getrlimit), and the start time. */
#include "ana_prom_process.h"

#include "ana_prom.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static struct {
  char build_info_name[96];
  char version[64];
  char revision[64];
  double start_time_s;
} proc;

/* Seconds since the epoch when this process started: its start in clock
 * ticks after boot (/proc/self/stat, field 22) plus the boot time (btime in
 * /proc/stat). 0 when either is unreadable. */
static double read_start_time(void) {
  double start = 0;
  unsigned long long ticks = 0, btime = 0;
  char buf[1024];
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f)
    return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The command name (field 2) may hold spaces and parentheses: fields
   * 3 on start after its last ')'. */
  char *p = strrchr(buf, ')');
  if (!p)
    return 0;
  p++;
  for (int field = 3; field < 22 && p; field++)
    p = strchr(p + 1, ' ');
  if (!p || sscanf(p, " %llu", &ticks) != 1)
    return 0;
  f = fopen("/proc/stat", "r");
  if (!f)
    return 0;
  while (fgets(buf, sizeof buf, f))
    if (sscanf(buf, "btime %llu", &btime) == 1)
      break;
  fclose(f);
  long hz = sysconf(_SC_CLK_TCK);
  if (btime && hz > 0)
    start = (double)btime + (double)ticks / (double)hz;
  return start;
}

/* Resident and virtual bytes from /proc/self/statm; false if unreadable. */
static bool read_memory(uint64_t *rss, uint64_t *vsize) {
  unsigned long long pages_v = 0, pages_r = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f)
    return false;
  int got = fscanf(f, "%llu %llu", &pages_v, &pages_r);
  fclose(f);
  if (got != 2)
    return false;
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  *rss = pages_r * page;
  *vsize = pages_v * page;
  return true;
}

/* Entries of /proc/self/fd less the directory's own; -1 if unreadable. */
static int64_t count_open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return -1;
  int64_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n - 1; /* the descriptor opendir holds */
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  (void)ctx;
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0) {
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    ana_prom_write_family(w, "process_cpu_seconds_total", "counter",
                          "Total user and system CPU time spent in seconds.");
    ana_prom_write_double(w, "process_cpu_seconds_total", NULL, cpu);
  }
  uint64_t rss, vsize;
  if (read_memory(&rss, &vsize)) {
    ana_prom_write_family(w, "process_resident_memory_bytes", "gauge",
                          "Resident memory size in bytes.");
    ana_prom_write_u64(w, "process_resident_memory_bytes", NULL, rss);
    ana_prom_write_family(w, "process_virtual_memory_bytes", "gauge",
                          "Virtual memory size in bytes.");
    ana_prom_write_u64(w, "process_virtual_memory_bytes", NULL, vsize);
  }
  int64_t fds = count_open_fds();
  if (fds >= 0) {
    ana_prom_write_family(w, "process_open_fds", "gauge", "Number of open file descriptors.");
    ana_prom_write_i64(w, "process_open_fds", NULL, fds);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    ana_prom_write_family(w, "process_max_fds", "gauge",
                          "Maximum number of open file descriptors.");
    ana_prom_write_double(w, "process_max_fds", NULL,
                          rl.rlim_cur == RLIM_INFINITY ? -1.0 : (double)rl.rlim_cur);
  }
  if (proc.start_time_s > 0) {
    ana_prom_write_family(w, "process_start_time_seconds", "gauge",
                          "Start time of the process since unix epoch in seconds.");
    ana_prom_write_double(w, "process_start_time_seconds", NULL, proc.start_time_s);
  }
  ana_prom_write_family(w, proc.build_info_name, "gauge",
                        "A metric with a constant '1' value labeled by version and revision "
                        "from which this program was built.");
  ana_prom_write_u64(
      w, proc.build_info_name,
      (const char *const[]){"version", proc.version, "revision", proc.revision, NULL}, 1);
}

int ana_prom_process_register(const char *program, const char *version, const char *revision) {
  snprintf(proc.build_info_name, sizeof proc.build_info_name, "%s_build_info", program);
  snprintf(proc.version, sizeof proc.version, "%s", version && *version ? version : "unknown");
  snprintf(proc.revision, sizeof proc.revision, "%s", revision && *revision ? revision : "unknown");
  proc.start_time_s = read_start_time();
  return ana_prom_register(collect, NULL);
}
