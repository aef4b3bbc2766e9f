/* Outbound notifications' settings: the struct their configuration rows fill. */
#ifndef ANA_NOTIFY_CONFIG_H
#define ANA_NOTIFY_CONFIG_H

#include "ana_config_table.h"

#include <stdbool.h>

/* Filled by ana_notify_config_table (config_rows.c); strings owned by the struct. */
struct ana_notify_settings {
  char *smtp_url;                /* SMTP_URL */
  char *smtp_user;               /* SMTP_USER */
  char *smtp_password;           /* SMTP_PASSWORD */
  char *smtp_password_file;      /* SMTP_PASSWORD_FILE */
  char *smtp_from;               /* SMTP_FROM */
  char *telegram_api_url;        /* TELEGRAM_API_URL */
  bool allow_private_networks;   /* NOTIFY_ALLOW_PRIVATE_NETWORKS */
  int notify_threads;            /* NOTIFY_THREADS */
  int notify_max_attempts;       /* NOTIFY_MAX_ATTEMPTS */
  int notify_backoff_initial_ms; /* NOTIFY_BACKOFF_INITIAL */
  int notify_backoff_max_ms;     /* NOTIFY_BACKOFF_MAX */
  int notify_timeout_ms;         /* NOTIFY_TIMEOUT */
  int notify_poll_ms;            /* NOTIFY_POLL_INTERVAL */
};

extern const struct ana_config_table ana_notify_config_table;

#endif
