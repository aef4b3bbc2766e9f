/* A call's client address: its peer, or behind trusted proxies the address
 * they forwarded (X-Forwarded-For), believed only as far as they wrote it. */
#include "ana_client_ip.h"

#include <stdbool.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct addr {
  int family;
  unsigned char bytes[16];
};

static bool parse_addr(const char *s, size_t n, struct addr *a) {
  char buf[64];
  while (n && (*s == ' ' || *s == '\t'))
    s++, n--;
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    n--;
  if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
    s++, n -= 2;
  if (n == 0 || n >= sizeof buf)
    return false;
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (inet_pton(AF_INET, buf, a->bytes) == 1) {
    a->family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, buf, a->bytes) == 1) {
    a->family = AF_INET6;
    return true;
  }
  return false;
}

/* One entry of a proxy list: an address, optionally with a /prefix (0 to
 * 32, or to 128 for IPv6; none means the address alone). */
static bool parse_cidr(const char *cidr, size_t n, struct addr *net, int *prefix) {
  const char *slash = memchr(cidr, '/', n);
  size_t addr_len = slash ? (size_t)(slash - cidr) : n;
  if (!parse_addr(cidr, addr_len, net))
    return false;
  int bits = net->family == AF_INET ? 32 : 128;
  *prefix = bits;
  if (!slash)
    return true;
  const char *p = slash + 1, *end = cidr + n;
  if (p == end)
    return false;
  int v = 0;
  for (; p < end; p++) {
    if (*p < '0' || *p > '9' || (v = v * 10 + (*p - '0')) > bits)
      return false;
  }
  *prefix = v;
  return true;
}

static bool in_range(const struct addr *a, const char *cidr, size_t n) {
  struct addr net;
  int prefix;
  if (!parse_cidr(cidr, n, &net, &prefix) || net.family != a->family)
    return false;
  for (int i = 0; i < prefix; i++) {
    int byte = i / 8, bit = 7 - i % 8;
    if (((a->bytes[byte] >> bit) & 1) != ((net.bytes[byte] >> bit) & 1))
      return false;
  }
  return true;
}

bool ana_client_ip_list_valid(const char *list) {
  const char *p = list;
  while (*p) {
    while (*p == ' ')
      p++;
    size_t n = strcspn(p, ",");
    size_t len = n;
    while (len && p[len - 1] == ' ')
      len--;
    struct addr net;
    int prefix;
    if (!parse_cidr(p, len, &net, &prefix))
      return false;
    p += n;
    if (*p == ',')
      p++;
  }
  return true;
}

static bool trusted(const struct addr *a, const char *list) {
  if (!list)
    return false;
  const char *p = list;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    size_t n = strcspn(p, ",");
    size_t len = n;
    while (len && p[len - 1] == ' ')
      len--;
    if (len && in_range(a, p, len))
      return true;
    p += n;
  }
  return false;
}

static void format_addr(const struct addr *a, char *out, size_t size) {
  if (!inet_ntop(a->family, a->bytes, out, (socklen_t)size) && size)
    out[0] = '\0';
}

/* "ipv4:1.2.3.4:5678", "ipv6:[::1]:5678" -> address. */
static bool parse_peer(const char *peer, struct addr *a) {
  if (!peer)
    return false;
  if (strncmp(peer, "ipv4:", 5) == 0) {
    const char *host = peer + 5;
    const char *colon = strrchr(host, ':');
    return parse_addr(host, colon ? (size_t)(colon - host) : strlen(host), a);
  }
  if (strncmp(peer, "ipv6:", 5) == 0) {
    const char *host = peer + 5;
    if (host[0] == '[') {
      const char *end = strchr(host, ']');
      return end && parse_addr(host + 1, (size_t)(end - host - 1), a);
    }
    return parse_addr(host, strlen(host), a);
  }
  return false;
}

void ana_client_ip(const char *peer, const char *forwarded_for, const char *trusted_proxies,
                   char *out, size_t out_size) {
  struct addr a;
  if (out_size)
    out[0] = '\0';
  if (!parse_peer(peer, &a))
    return;
  if (forwarded_for && trusted(&a, trusted_proxies)) {
    /* Walk X-Forwarded-For from the nearest hop outwards; the first address
     * not belonging to a trusted proxy is the client. */
    const char *end = forwarded_for + strlen(forwarded_for);
    while (end > forwarded_for) {
      const char *start = end;
      while (start > forwarded_for && start[-1] != ',')
        start--;
      struct addr hop;
      if (!parse_addr(start, (size_t)(end - start), &hop))
        break; /* garbage: keep the last address we could believe */
      a = hop;
      if (!trusted(&hop, trusted_proxies))
        break;
      end = start > forwarded_for ? start - 1 : start;
    }
  }
  format_addr(&a, out, out_size);
}
