/* Fuzzes configuration parsing: each input line is the value of one
 * variable, in table order. Bad values must fail cleanly, never crash. */
#include "ana_config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const names[] = {
    "PORT",
    "GRPC_PORT",
    "GRPC_HOST",
    "MONGODB_URI",
    "ELASTICSEARCH_NODE",
    "CLICKHOUSE_HOST",
    "REDIS_URL",
    "RABBITMQ_URL",
    "REPORTS_DIR",
    "EXPORTS_DIR",
    "RETENTION_DAYS",
    "BATCH_SIZE",
    "PROCESSING_INTERVAL",
    "STREAM_BUFFER_SIZE",
    "DATA_DIR",
    "LOG_LEVEL",
    "SHUTDOWN_GRACE_MS",
    "DEFAULT_ACCOUNT_ID",
    "GRPC_MAX_MESSAGE_BYTES",
    "GRPC_THREADS",
    "STREAM_SEND_QUEUE_MAX",
};
#define N_NAMES (sizeof names / sizeof names[0])

struct env {
  char *values[N_NAMES];
};

static const char *lookup(const char *name, void *ctx) {
  struct env *e = ctx;
  for (size_t i = 0; i < N_NAMES; i++)
    if (strcmp(names[i], name) == 0)
      return e->values[i];
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *text = malloc(size + 1);
  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  struct env e;
  memset(&e, 0, sizeof e);
  char *p = text;
  for (size_t i = 0; i < N_NAMES && p; i++) {
    e.values[i] = p;
    p = strchr(p, '\n');
    if (p)
      *p++ = '\0';
  }
  struct ana_config cfg;
  struct ana_error err;
  if (ana_config_load(&cfg, lookup, &e, &err) == 0)
    ana_config_fini(&cfg);
  free(text);
  return 0;
}
