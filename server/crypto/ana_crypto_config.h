/* Field encryption's settings: the struct its configuration rows fill. */
#ifndef ANA_CRYPTO_CONFIG_H
#define ANA_CRYPTO_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_crypto_config_table (config_rows.c); strings owned by the struct. */
struct ana_crypto_settings {
  char *encrypted_fields;     /* ENCRYPTED_FIELDS */
  char *previous_key_file;    /* ENCRYPTION_PREVIOUS_KEY_FILE */
  int reencrypt_batch_events; /* REENCRYPT_BATCH_EVENTS */
  int reencrypt_pause_ms;     /* REENCRYPT_PAUSE */
};

extern const struct ana_config_table ana_crypto_config_table;

#endif
