/* Configuration rows of the MongoDB catalog (its code comes in this folder): until it is built
 * in, MONGODB_URI is validated and ignored with a warning (the registry keeps SQLite). */
#include "ana_store_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_store_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "MONGODB_URI",
     .type = ANA_CONFIG_URL,
     .def = "",
     .help = "MongoDB connection string, for the catalog of metrics, reports and alerts.",
     .schemes = "mongodb mongodb+srv",
     .status = ANA_CONFIG_NOT_YET_SUPPORTED,
     .feature = "the MongoDB backend",
     .instead = "using the embedded store",
     ROW(mongodb_uri)},
};

const struct ana_config_table ana_store_mongodb_config_table =
    ANA_CONFIG_TABLE("store/mongodb", rows);
