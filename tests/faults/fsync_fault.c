/* LD_PRELOAD shim for disk-fault tests: while the file named by
 * ANA_FAULT_FSYNC_FILE exists, fsync and fdatasync fail with EIO, as a
 * failing disk would make them. */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static int fault_active(void) {
  const char *trigger = getenv("ANA_FAULT_FSYNC_FILE");
  return trigger && access(trigger, F_OK) == 0;
}

int fsync(int fd) {
  static int (*real)(int);
  if (fault_active()) {
    errno = EIO;
    return -1;
  }
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  return real(fd);
}

int fdatasync(int fd) {
  static int (*real)(int);
  if (fault_active()) {
    errno = EIO;
    return -1;
  }
  if (!real)
    real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  return real(fd);
}
