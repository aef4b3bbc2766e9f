/* A client's address behind proxies: the peer, or the X-Forwarded-For hop
 * written by the trusted proxies (TRUSTED_PROXIES) in front of it. */
#ifndef ANA_CLIENT_IP_H
#define ANA_CLIENT_IP_H

#include <stdbool.h>
#include <stddef.h>

/* The client address: the peer ("ipv4:1.2.3.4:5678", "ipv6:[::1]:5678"), or,
 * when the peer is one of the trusted proxies (comma-separated IPs or CIDR
 * ranges), the nearest untrusted address of X-Forwarded-For. Writes "" when
 * unknown (no IP peer). */
void ana_client_ip(const char *peer, const char *forwarded_for, const char *trusted_proxies,
                   char *out, size_t out_size);

/* Whether list is a valid TRUSTED_PROXIES: IPv4 or IPv6 addresses, each
 * optionally with a /prefix (at most 32 or 128), separated by commas (spaces
 * around them allowed); "" is valid (no proxies). */
bool ana_client_ip_list_valid(const char *list);

#endif
