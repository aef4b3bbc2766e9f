/* Why a listening port could not be opened, found by binding it once more. */
#include "ana_listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void ana_listen_error(const char *host, int port, char *out, size_t size) {
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
  struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  const struct sockaddr *sa = (const struct sockaddr *)&a6;
  socklen_t len = sizeof a6;
  int family = AF_INET6;
  if (host && inet_pton(AF_INET, host, &a4.sin_addr) == 1) {
    sa = (const struct sockaddr *)&a4;
    len = sizeof a4;
    family = AF_INET;
  } else if (host && inet_pton(AF_INET6, host, &a6.sin6_addr) != 1) {
    snprintf(out, size, "the address cannot be bound");
    return;
  } else if (!host) {
    a6.sin6_addr = in6addr_any;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 && family == AF_INET6 && !host) { /* no IPv6: every IPv4 interface */
    a4.sin_addr.s_addr = htonl(INADDR_ANY);
    sa = (const struct sockaddr *)&a4;
    len = sizeof a4;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  int one = 1, e = 0;
  if (fd < 0)
    e = errno;
  else if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 || bind(fd, sa, len) < 0)
    e = errno;
  if (fd >= 0)
    close(fd);
  if (e == EADDRINUSE)
    snprintf(out, size, "the port is already in use (another process listens on it)");
  else if (e)
    snprintf(out, size, "%s", strerror(e));
  else
    snprintf(out, size, "the address cannot be bound");
}
