/* Small files read whole (see ana_file.h). */
#include "ana_file.h"

#include "ana_alloc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int ana_file_read_whole(const char *name, const char *path, size_t max, char **out, size_t *len,
                        struct ana_error *err) {
  int rc = ANA_ERR_INVALID;
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: cannot read %s: %s", name, path,
                  strerror(errno));
    return ANA_ERR_INVALID;
  }
  /* One byte more than allowed tells a file at the limit from a larger one. */
  char *buf = ana_malloc(max + 1);
  if (!buf) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    rc = ANA_ERR_NOMEM;
    goto out;
  }
  size_t n = fread(buf, 1, max + 1, f);
  if (ferror(f)) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: cannot read %s: %s", name, path,
                  strerror(errno ? errno : EIO));
    goto out;
  }
  if (n > max) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: %s is larger than %zu bytes", name, path,
                  max);
    goto out;
  }
  buf[n] = '\0';
  *out = buf;
  if (len)
    *len = n;
  buf = NULL;
  rc = 0;
out:
  ana_free(buf);
  fclose(f);
  return rc;
}
