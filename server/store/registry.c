/* Every storage backend, by role, the checks a backend's table must pass, and
 * the choice of backends from configuration. Adding a backend means adding
 * its folder, a line in its role's list here, and its sources in
 * CMakeLists.txt. */
#include "ana_api_keys.h"
#include "ana_audit.h"
#include "ana_crypto.h"
#include "ana_store.h"
#include "ana_store_config.h"
#include "clickhouse/clickhouse_backend.h"
#include "sqlite/sqlite_backends.h"

#include <string.h>

static const struct ana_event_store_ops *const event_stores[] = {
    &ana_sqlite_event_store,
    &ana_clickhouse_event_store,
};

static const struct ana_search_index_ops *const search_indexes[] = {
    &ana_sqlite_search_index,
};

static const struct ana_catalog_ops *const catalogs[] = {
    &ana_sqlite_catalog,
};

static const struct ana_api_key_store_ops *const key_stores[] = {
    &ana_sqlite_api_key_store,
};

static const struct ana_audit_store_ops *const audit_stores[] = {
    &ana_sqlite_audit_store,
};

#define COUNT(a) (sizeof(a) / sizeof(a)[0])

/* The checks: the version the backend was written against, then each
 * mandatory operation, in the order of the role's table. */
static int check_version(const char *role, const char *name, int version, int want,
                         struct ana_error *err) {
  if (version == want)
    return 0;
  return ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                       "storage backend \"%s\" (%s): written for version %d of the role, this "
                       "server has version %d",
                       name ? name : "(unnamed)", role, version, want);
}

static int missing(const char *role, const char *name, const char *op, struct ana_error *err) {
  return ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION,
                       "storage backend \"%s\" (%s): lacks the operation %s",
                       name ? name : "(unnamed)", role, op);
}

#define NEED(role, ops, member)                                                                    \
  do {                                                                                             \
    if (!(ops)->member)                                                                            \
      return missing(role, (ops)->name, #member, err);                                             \
  } while (0)

int ana_store_check_event_store(const struct ana_event_store_ops *ops, struct ana_error *err) {
  static const char role[] = "event store";
  if (check_version(role, ops->name, ops->version, ANA_EVENT_STORE_VERSION, err) < 0)
    return ANA_ERR_INVALID;
  if (!ops->name || !ops->name[0])
    return missing(role, ops->name, "name", err);
  NEED(role, ops, open);
  NEED(role, ops, ship);
  NEED(role, ops, shipped_seq);
  NEED(role, ops, search);
  NEED(role, ops, scan);
  NEED(role, ops, scan_seq);
  NEED(role, ops, last_seq);
  NEED(role, ops, expire);
  NEED(role, ops, close);
  return 0;
}

int ana_store_check_search_index(const struct ana_search_index_ops *ops, struct ana_error *err) {
  static const char role[] = "search index";
  if (check_version(role, ops->name, ops->version, ANA_SEARCH_INDEX_VERSION, err) < 0)
    return ANA_ERR_INVALID;
  if (!ops->name || !ops->name[0])
    return missing(role, ops->name, "name", err);
  NEED(role, ops, open);
  /* committed is optional */
  NEED(role, ops, indexed_seq);
  NEED(role, ops, wait);
  NEED(role, ops, search);
  NEED(role, ops, remove);
  NEED(role, ops, close);
  return 0;
}

int ana_store_check_catalog(const struct ana_catalog_ops *ops, struct ana_error *err) {
  static const char role[] = "catalog";
  if (check_version(role, ops->name, ops->version, ANA_CATALOG_VERSION, err) < 0)
    return ANA_ERR_INVALID;
  if (!ops->name || !ops->name[0])
    return missing(role, ops->name, "name", err);
  NEED(role, ops, open);
  NEED(role, ops, put);
  NEED(role, ops, get);
  NEED(role, ops, get_by_name);
  NEED(role, ops, list);
  NEED(role, ops, remove);
  NEED(role, ops, close);
  return 0;
}

int ana_store_check_api_key_store(const struct ana_api_key_store_ops *ops, struct ana_error *err) {
  static const char role[] = "API key store";
  if (check_version(role, ops->name, ops->version, ANA_API_KEY_STORE_VERSION, err) < 0)
    return ANA_ERR_INVALID;
  if (!ops->name || !ops->name[0])
    return missing(role, ops->name, "name", err);
  NEED(role, ops, open);
  NEED(role, ops, insert);
  NEED(role, ops, get);
  NEED(role, ops, list);
  NEED(role, ops, revoke);
  NEED(role, ops, touch);
  NEED(role, ops, count_active);
  NEED(role, ops, close);
  return 0;
}

int ana_store_check_audit_store(const struct ana_audit_store_ops *ops, struct ana_error *err) {
  static const char role[] = "audit store";
  if (check_version(role, ops->name, ops->version, ANA_AUDIT_STORE_VERSION, err) < 0)
    return ANA_ERR_INVALID;
  if (!ops->name || !ops->name[0])
    return missing(role, ops->name, "name", err);
  NEED(role, ops, open);
  NEED(role, ops, head);
  NEED(role, ops, anchor);
  NEED(role, ops, append);
  NEED(role, ops, retain);
  NEED(role, ops, list);
  NEED(role, ops, close);
  return 0;
}

/* The backend of that name in a role's list, if it passes its checks. */
#define FIND(list, check, name, err)                                                               \
  do {                                                                                             \
    for (size_t i_ = 0; i_ < COUNT(list); i_++)                                                    \
      if (list[i_]->name && strcmp(list[i_]->name, name) == 0)                                     \
        return check(list[i_], err) == 0 ? list[i_] : NULL;                                        \
    return NULL;                                                                                   \
  } while (0)

static const struct ana_event_store_ops *find_event_store(const char *name, struct ana_error *err) {
  FIND(event_stores, ana_store_check_event_store, name, err);
}

static const struct ana_search_index_ops *find_search_index(const char *name,
                                                            struct ana_error *err) {
  FIND(search_indexes, ana_store_check_search_index, name, err);
}

static const struct ana_catalog_ops *find_catalog(const char *name, struct ana_error *err) {
  FIND(catalogs, ana_store_check_catalog, name, err);
}

static const struct ana_api_key_store_ops *find_key_store(const char *name, struct ana_error *err) {
  FIND(key_stores, ana_store_check_api_key_store, name, err);
}

static const struct ana_audit_store_ops *find_audit_store(const char *name, struct ana_error *err) {
  FIND(audit_stores, ana_store_check_audit_store, name, err);
}

const struct ana_event_store_ops *ana_store_event_backend(const char *name) {
  struct ana_error err;
  return find_event_store(name, &err);
}

const struct ana_search_index_ops *ana_store_search_backend(const char *name) {
  struct ana_error err;
  return find_search_index(name, &err);
}

const struct ana_catalog_ops *ana_store_catalog_backend(const char *name) {
  struct ana_error err;
  return find_catalog(name, &err);
}

const struct ana_api_key_store_ops *ana_store_api_key_backend(const char *name) {
  struct ana_error err;
  return find_key_store(name, &err);
}

const struct ana_audit_store_ops *ana_store_audit_backend(const char *name) {
  struct ana_error err;
  return find_audit_store(name, &err);
}

/* The backend a configured variable asks for, when it is built in; the
 * embedded one otherwise (the variable was then reported at start-up as not
 * yet supported, and is ignored). */
static const char *chosen(const char *setting, const char *backend, bool built_in) {
  return setting && setting[0] && built_in ? backend : "sqlite";
}

static bool has_event_store(const char *name) {
  for (size_t i = 0; i < COUNT(event_stores); i++)
    if (event_stores[i]->name && strcmp(event_stores[i]->name, name) == 0)
      return true;
  return false;
}

static bool has_search_index(const char *name) {
  for (size_t i = 0; i < COUNT(search_indexes); i++)
    if (search_indexes[i]->name && strcmp(search_indexes[i]->name, name) == 0)
      return true;
  return false;
}

static bool has_catalog(const char *name) {
  for (size_t i = 0; i < COUNT(catalogs); i++)
    if (catalogs[i]->name && strcmp(catalogs[i]->name, name) == 0)
      return true;
  return false;
}

int ana_store_select(const struct ana_store_settings *cfg, struct ana_store_selection *out,
                     struct ana_error *err) {
  memset(out, 0, sizeof *out);
  ana_clickhouse_configure(cfg);
  const char *events = chosen(cfg->clickhouse_host, "clickhouse", has_event_store("clickhouse"));
  const char *search =
      chosen(cfg->elasticsearch_node, "elasticsearch", has_search_index("elasticsearch"));
  const char *catalog = chosen(cfg->mongodb_uri, "mongodb", has_catalog("mongodb"));
  ana_error_clear(err);
  if (!(out->events = find_event_store(events, err)) ||
      !(out->search = find_search_index(search, err)) ||
      !(out->catalog = find_catalog(catalog, err)) ||
      !(out->api_keys = find_key_store("sqlite", err)) ||
      !(out->audit = find_audit_store("sqlite", err))) {
    if (!err->message[0])
      ana_error_set(err, ANA_STATUS_FAILED_PRECONDITION, "storage: no such backend");
    return ANA_ERR_INVALID;
  }
  return 0;
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
