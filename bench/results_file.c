/* Replacing one benchmark's section of bench/RESULTS.md. */
#include "results_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = calloc(1, (size_t)(n > 0 ? n : 0) + 1);
  if (s && n > 0 && fread(s, 1, (size_t)n, f) != (size_t)n)
    s[0] = '\0';
  fclose(f);
  return s;
}

void bench_results_replace(const char *path, const char *heading, const char *section) {
  char *old = read_file(path);
  if (!old)
    old = strdup("# Benchmarks\n");
  char *start = strstr(old, heading), *end = NULL;
  if (start) {
    end = strstr(start + 1, "\n## ");
    char *h1 = strstr(start + 1, "\n# ");
    if (!end || (h1 && h1 < end))
      end = h1;
  }
  FILE *f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "bench: cannot write %s: %s\n", path, strerror(errno));
    free(old);
    return;
  }
  if (start) {
    fwrite(old, 1, (size_t)(start - old), f);
    fputs(section, f);
    if (end)
      fprintf(f, "\n%s", end + 1);
  } else {
    size_t n = strlen(old);
    fputs(old, f);
    if (n && old[n - 1] != '\n')
      fputc('\n', f);
    if (n)
      fputc('\n', f);
    fputs(section, f);
  }
  fclose(f);
  free(old);
}
