/* The standard process_* metric families and <program>_build_info. */
#ifndef ANA_PROM_PROCESS_H
#define ANA_PROM_PROCESS_H

/* Registers the collector of process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds and
 * <program>_build_info{version,revision} 1 (program: "analyticsd"; the
 * strings are copied, "" or NULL read "unknown"). Call once, at start-up.
 * Returns 0 or ANA_ERR_FULL. */
int ana_prom_process_register(const char *program, const char *version, const char *revision);

#endif
