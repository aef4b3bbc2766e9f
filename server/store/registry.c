/* Every storage backend, by role. Adding a backend means adding its folder,
 * a line here, and its sources in CMakeLists.txt. */
#include "ana_api_keys.h"
#include "ana_audit.h"
#include "ana_crypto.h"
#include "ana_store.h"
#include "sqlite/sqlite_backends.h"

#include <string.h>

static const struct ana_event_store_ops *const event_stores[] = {
    &ana_sqlite_event_store,
};

const struct ana_event_store_ops *ana_store_event_backend(const char *name) {
  for (size_t i = 0; i < sizeof event_stores / sizeof event_stores[0]; i++)
    if (strcmp(event_stores[i]->name, name) == 0)
      return event_stores[i];
  return NULL;
}

static const struct ana_catalog_ops *const catalogs[] = {
    &ana_sqlite_catalog,
};

const struct ana_catalog_ops *ana_store_catalog_backend(const char *name) {
  for (size_t i = 0; i < sizeof catalogs / sizeof catalogs[0]; i++)
    if (strcmp(catalogs[i]->name, name) == 0)
      return catalogs[i];
  return NULL;
}

static const struct ana_api_key_store_ops *const key_stores[] = {
    &ana_sqlite_api_key_store,
};

const struct ana_api_key_store_ops *ana_store_api_key_backend(const char *name) {
  for (size_t i = 0; i < sizeof key_stores / sizeof key_stores[0]; i++)
    if (strcmp(key_stores[i]->name, name) == 0)
      return key_stores[i];
  return NULL;
}

static const struct ana_audit_store_ops *const audit_stores[] = {
    &ana_sqlite_audit_store,
};

const struct ana_audit_store_ops *ana_store_audit_backend(const char *name) {
  for (size_t i = 0; i < sizeof audit_stores / sizeof audit_stores[0]; i++)
    if (strcmp(audit_stores[i]->name, name) == 0)
      return audit_stores[i];
  return NULL;
}

static const struct ana_data_key_store_ops *const data_key_stores[] = {
    &ana_sqlite_data_key_store,
};

const struct ana_data_key_store_ops *ana_store_data_key_backend(const char *name) {
  for (size_t i = 0; i < sizeof data_key_stores / sizeof data_key_stores[0]; i++)
    if (strcmp(data_key_stores[i]->name, name) == 0)
      return data_key_stores[i];
  return NULL;
}
