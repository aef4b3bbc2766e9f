/* The private-network policy: which IP addresses an outbound request to a
 * user-supplied URL may reach (public unicast only). */
#include "ana_http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* addr in host byte order. */
static const char *v4_reason(uint32_t a) {
  uint8_t b0 = a >> 24, b1 = (a >> 16) & 0xff, b2 = (a >> 8) & 0xff;
  if (b0 == 0)
    return "unspecified (0.0.0.0/8)";
  if (b0 == 127)
    return "loopback";
  if (b0 == 10 || (b0 == 172 && (b1 & 0xf0) == 16) || (b0 == 192 && b1 == 168))
    return "private";
  if (b0 == 169 && b1 == 254)
    return "link-local";
  if (b0 == 100 && (b1 & 0xc0) == 64)
    return "carrier-grade NAT (100.64.0.0/10)";
  if ((b0 & 0xf0) == 224)
    return "multicast";
  if ((b0 & 0xf0) == 240)
    return "reserved (240.0.0.0/4, broadcast)";
  if (b0 == 192 && b1 == 0 && (b2 == 0 || b2 == 2))
    return "reserved (192.0.0.0/24, 192.0.2.0/24)";
  if (b0 == 198 && (b1 & 0xfe) == 18)
    return "reserved (198.18.0.0/15)";
  if ((b0 == 198 && b1 == 51 && b2 == 100) || (b0 == 203 && b1 == 0 && b2 == 113))
    return "reserved (documentation)";
  return NULL;
}

static uint32_t v4_at(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *v6_reason(const uint8_t *a) {
  static const uint8_t zero[16];
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  if (memcmp(a, zero, 16) == 0)
    return "unspecified";
  if (memcmp(a, zero, 15) == 0 && a[15] == 1)
    return "loopback";
  /* Forms that carry an IPv4 address: judged by it. */
  if (memcmp(a, mapped, 12) == 0 || memcmp(a, zero, 12) == 0 || memcmp(a, nat64, 12) == 0)
    return v4_reason(v4_at(a + 12));
  if (a[0] == 0x20 && a[1] == 0x02) /* 6to4: 2002:AABB:CCDD::/48 */
    return v4_reason(v4_at(a + 2));
  if (a[0] == 0xff)
    return "multicast";
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
    return "link-local";
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)
    return "private (site-local)";
  if ((a[0] & 0xfe) == 0xfc)
    return "private (unique local)";
  if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0 && a[3] == 0)
    return "reserved (Teredo)";
  if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
    return "reserved (documentation)";
  if (a[0] == 0x01 && memcmp(a + 1, zero, 7) == 0)
    return "reserved (discard-only)";
  return NULL;
}

const char *ana_net_refused_reason(const struct sockaddr *sa) {
  if (!sa)
    return "no address";
  if (sa->sa_family == AF_INET)
    return v4_reason(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
  if (sa->sa_family == AF_INET6)
    return v6_reason(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
  return "not an IP address";
}

const char *ana_net_refused_reason_text(const char *ip) {
  struct in_addr v4;
  struct in6_addr v6;
  if (ip && inet_pton(AF_INET, ip, &v4) == 1)
    return v4_reason(ntohl(v4.s_addr));
  if (ip && inet_pton(AF_INET6, ip, &v6) == 1)
    return v6_reason(v6.s6_addr);
  return "not an IP address";
}
