/* `analyticsd healthcheck`: the container's health probe (the Dockerfile's
 * HEALTHCHECK). GETs /health of the analyticsd serving on this machine, at
 * PORT and HTTP_HOST as the environment gives them, with libcurl. */
#include "healthcheck.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HEALTHCHECK_TIMEOUT_MS 3000

/* Keeps the body out of stdout: only the verdict is printed. */
static size_t discard(char *data, size_t size, size_t n, void *ctx) {
  (void)data;
  (void)ctx;
  return size * n;
}

int ana_healthcheck_main(int argc, char **argv) {
  (void)argv;
  if (argc > 1) {
    fprintf(stderr, "usage: analyticsd healthcheck\n"
                    "  GETs http://HTTP_HOST:PORT/health (0.0.0.0 and :: read as loopback);\n"
                    "  exit 0 when it answers 200, 1 otherwise.\n");
    return 2;
  }
  const char *port_s = getenv("PORT");
  const char *host = getenv("HTTP_HOST");
  char *end = NULL;
  long port = port_s && *port_s ? strtol(port_s, &end, 10) : 3004;
  if ((port_s && *port_s && *end) || port < 1 || port > 65535) {
    fprintf(stderr, "analyticsd healthcheck: PORT: not a port number (\"%s\")\n", port_s);
    return 2;
  }
  if (!host || !*host || strcmp(host, "0.0.0.0") == 0)
    host = "127.0.0.1";
  else if (strcmp(host, "::") == 0)
    host = "::1";
  char url[300];
  snprintf(url, sizeof url, strchr(host, ':') ? "http://[%s]:%ld/health" : "http://%s:%ld/health",
           host, port);

  int rc = 1;
  long status = 0;
  CURL *curl = curl_easy_init();
  if (!curl) {
    fprintf(stderr, "analyticsd healthcheck: out of memory\n");
    return 1;
  }
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)HEALTHCHECK_TIMEOUT_MS);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard);
  CURLcode res = curl_easy_perform(curl);
  if (res != CURLE_OK) {
    fprintf(stderr, "analyticsd healthcheck: %s: %s\n", url, curl_easy_strerror(res));
    goto out;
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    fprintf(stderr, "analyticsd healthcheck: %s answered %ld\n", url, status);
    goto out;
  }
  printf("analyticsd healthcheck: %s answered 200\n", url);
  rc = 0;
out:
  curl_easy_cleanup(curl);
  return rc;
}
