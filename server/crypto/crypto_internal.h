/* Shared between crypto.c and the crypto module's other files: a data key by id. */
#ifndef ANA_CRYPTO_INTERNAL_H
#define ANA_CRYPTO_INTERNAL_H

#include "ana_crypto.h"

/* The account's data key want (0: its current one, made on first use) into
 * key and its id into *id_out. Returns 0, or a negative error (DATA_LOSS
 * when the account lacks key want). The caller cleanses key. */
int ana_crypto_data_key(struct ana_crypto *c, const char *account_id, uint32_t want,
                        uint32_t *id_out, uint8_t key[32], struct ana_error *err);

#endif
