/* Authentication settings: the struct its configuration rows fill. */
#ifndef ANA_AUTH_CONFIG_H
#define ANA_AUTH_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_auth_config_table (config_rows.c); strings owned by the struct. */
struct ana_auth_settings {
  char *default_account_id;
};

extern const struct ana_config_table ana_auth_config_table;

#endif
