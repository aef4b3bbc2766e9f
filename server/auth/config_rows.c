/* Configuration rows: authentication settings. Adding a variable = a row here and a member in
 * struct ana_auth_settings. */
#include "ana_auth_config.h"

#include <ctype.h>
#include <string.h>

#define ACCOUNT_ID_MAX 128

static bool valid_account_id(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > ACCOUNT_ID_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && !strchr("_.:-", c))
      return false;
  }
  return true;
}

#define ROW(member) ANA_CONFIG_FIELD(struct ana_auth_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "DEFAULT_ACCOUNT_ID",
     .type = ANA_CONFIG_STRING,
     .def = "default",
     .help = "Account that every request runs as until authentication is configured.",
     .check = valid_account_id,
     .expect = "an account id (1 to 128 characters from A-Z a-z 0-9 _ . : -)",
     ROW(default_account_id)},
};

const struct ana_config_table ana_auth_config_table = ANA_CONFIG_TABLE("auth", rows);
