/* bench/RESULTS.md is shared by every benchmark: each owns one "## " section
 * and replaces only that one, keeping the others. */
#ifndef BENCH_RESULTS_FILE_H
#define BENCH_RESULTS_FILE_H

/* Replaces the section that starts with the line `heading` (e.g.
 * "## REST and WebSocket") up to the next "## " or "# " heading, or appends
 * it when the file has none. `section` starts with that heading. A missing
 * file is created with a "# Benchmarks" title. */
void bench_results_replace(const char *path, const char *heading, const char *section);

#endif
