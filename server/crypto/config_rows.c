/* Configuration rows: field encryption's settings. Adding a variable = a row here and a member in
 * struct ana_crypto_settings. */
#include "ana_crypto_config.h"
#include "ana_crypto_fields.h"

static bool fields_ok(const char *value) {
  struct ana_crypto_fields *f = NULL;
  struct ana_error err;
  bool ok = ana_crypto_fields_parse(value, &f, &err) == 0;
  ana_crypto_fields_free(f);
  return ok;
}

#define ROW(member) ANA_CONFIG_FIELD(struct ana_crypto_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "ENCRYPTED_FIELDS",
     .type = ANA_CONFIG_STRING,
     .def = "",
     .help = "Event fields stored encrypted (AES-256-GCM under the account's data key), "
             "comma-separated: context.ip, context.userAgent, context.locale, "
             "properties.<key>[.<key>...] (e.g. context.ip,properties.email). Not in the "
             "free-text index; filters and dimensions on them use a keyed blind index; shown "
             "in clear only to principals with pii:read, masked (***) to others.",
     .check = fields_ok,
     .expect = "a comma-separated list of context.ip, context.userAgent, context.locale and "
               "properties.<key>[.<key>...] (at most 32)",
     ROW(encrypted_fields)},
    {.name = "ENCRYPTION_PREVIOUS_KEY_FILE",
     .type = ANA_CONFIG_PATH,
     .def = "",
     .help = "The master key ENCRYPTION_KEY_FILE replaces, given once when changing it: at "
             "start every data key still wrapped by it is rewrapped by the new key in one "
             "transaction (blind indexes keep matching); afterwards it is not needed and can "
             "be removed. Offline instead: analyticsd data-keys rotate-master.",
     ROW(previous_key_file)},
    {.name = "REENCRYPT_BATCH_EVENTS",
     .type = ANA_CONFIG_INT,
     .def = "500",
     .min = 1,
     .max = 100000,
     .help = "Events the re-encryption job reads per transaction (and at most rewrites): when "
             "ENCRYPTED_FIELDS covers fields that events were stored without, those events are "
             "rewritten sealed in the background at start-up, resuming where a stop left off.",
     ROW(reencrypt_batch_events)},
    {.name = "REENCRYPT_PAUSE",
     .type = ANA_CONFIG_DURATION,
     .def = "20ms",
     .min = 0,
     .max = 60000,
     .help = "Pause of the re-encryption job between its transactions, which leaves the store "
             "to commits and searches.",
     ROW(reencrypt_pause_ms)},
};

const struct ana_config_table ana_crypto_config_table = ANA_CONFIG_TABLE("crypto", rows);
