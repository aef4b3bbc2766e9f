/* analyticsd's configuration: the modules' row tables, in documentation order, bound to struct
 * ana_config. */
#include "ana_config.h"

#include <string.h>

#define N_TABLES 15

/* The tables in the order --help, .env.example and the README list them. */
static void bind(struct ana_config *cfg, struct ana_config_binding *b) {
  size_t i = 0;
  b[i++] = (struct ana_config_binding){&ana_bridge_config_table, cfg ? &cfg->bridge : NULL};
  b[i++] = (struct ana_config_binding){&ana_rpc_config_table, cfg ? &cfg->rpc : NULL};
  b[i++] = (struct ana_config_binding){&ana_store_mongodb_config_table, cfg ? &cfg->store : NULL};
  b[i++] =
      (struct ana_config_binding){&ana_store_elasticsearch_config_table, cfg ? &cfg->store : NULL};
  b[i++] =
      (struct ana_config_binding){&ana_store_clickhouse_config_table, cfg ? &cfg->store : NULL};
  b[i++] = (struct ana_config_binding){&ana_store_config_table, cfg ? &cfg->store : NULL};
  b[i++] = (struct ana_config_binding){&ana_ingest_config_table, cfg ? &cfg->ingest : NULL};
  b[i++] = (struct ana_config_binding){&ana_realtime_config_table, cfg ? &cfg->realtime : NULL};
  b[i++] = (struct ana_config_binding){&ana_metrics_config_table, cfg ? &cfg->metrics : NULL};
  b[i++] = (struct ana_config_binding){&ana_alerts_config_table, cfg ? &cfg->alerts : NULL};
  b[i++] = (struct ana_config_binding){&ana_reports_config_table, cfg ? &cfg->reports : NULL};
  b[i++] = (struct ana_config_binding){&ana_auth_config_table, cfg ? &cfg->auth : NULL};
  b[i++] = (struct ana_config_binding){&ana_crypto_config_table, cfg ? &cfg->crypto : NULL};
  b[i++] = (struct ana_config_binding){&ana_notify_config_table, cfg ? &cfg->notify : NULL};
  b[i++] = (struct ana_config_binding){&ana_process_config_table, cfg ? &cfg->process : NULL};
}

int ana_config_load(struct ana_config *cfg, ana_getenv_fn getenv_fn, void *ctx,
                    struct ana_error *err) {
  struct ana_config_binding b[N_TABLES];
  memset(cfg, 0, sizeof *cfg);
  bind(cfg, b);
  return ana_config_table_load(b, N_TABLES, getenv_fn, ctx, NULL, NULL, err);
}

static void log_bad(const char *message, void *ctx) {
  (void)ctx;
  ANA_ERROR("config", "invalid configuration: %s", message);
}

int ana_config_load_at_startup(struct ana_config *cfg) {
  struct ana_config_binding b[N_TABLES];
  struct ana_error err;
  ana_error_clear(&err);
  memset(cfg, 0, sizeof *cfg);
  bind(cfg, b);
  int rc = ana_config_table_load(b, N_TABLES, NULL, NULL, log_bad, NULL, &err);
  if (rc == ANA_ERR_NOMEM)
    ANA_ERROR("config", "invalid configuration: %s", err.message);
  if (rc < 0)
    return rc;
  ana_log_set_level(cfg->process.log_level);
  double share;
  if (ana_log_access_sample_parse(cfg->process.access_log_sample, &share) == 0)
    ana_log_access_set_sample(share);
  ana_log_access_set_max_per_second((unsigned)cfg->process.access_log_max_per_s);
  return 0;
}

void ana_config_fini(struct ana_config *cfg) {
  struct ana_config_binding b[N_TABLES];
  if (!cfg)
    return;
  bind(cfg, b);
  ana_config_table_fini(b, N_TABLES);
  memset(cfg, 0, sizeof *cfg);
}

void ana_config_each_unsupported(const struct ana_config *cfg,
                                 void (*fn)(const char *name, const char *what, void *ctx),
                                 void *ctx) {
  struct ana_config_binding b[N_TABLES];
  bind((struct ana_config *)cfg, b);
  ana_config_table_each_unsupported(b, N_TABLES, fn, ctx);
}

void ana_config_write_help(FILE *out) {
  struct ana_config_binding b[N_TABLES];
  bind(NULL, b);
  ana_config_table_write_help(b, N_TABLES, out);
}

void ana_config_write_env_example(FILE *out) {
  struct ana_config_binding b[N_TABLES];
  bind(NULL, b);
  ana_config_table_write_env_example(b, N_TABLES, out);
}

void ana_config_write_markdown(FILE *out) {
  struct ana_config_binding b[N_TABLES];
  bind(NULL, b);
  ana_config_table_write_markdown(b, N_TABLES, out);
}
