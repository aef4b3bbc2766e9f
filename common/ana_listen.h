/* Explaining a failed listen: the libraries that listen (libwebsockets, gRPC
 * core) log why but do not return it. */
#ifndef ANA_LISTEN_H
#define ANA_LISTEN_H

#include <stddef.h>

/* Writes into out (size bytes) why host:port cannot be listened on, found
 * with a bind of our own: "the port is already in use (another process
 * listens on it)", or strerror's text. host NULL (or "0.0.0.0", "::"):
 * every interface. */
void ana_listen_error(const char *host, int port, char *out, size_t size);

#endif
