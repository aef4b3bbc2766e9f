/* Configuration rows of the Elasticsearch search index (its code comes in this folder): until it
 * is built in, ELASTICSEARCH_NODE is validated and ignored with a warning (the registry keeps
 * SQLite). */
#include "ana_store_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_store_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "ELASTICSEARCH_NODE",
     .type = ANA_CONFIG_URL,
     .def = "",
     .help = "Elasticsearch URL, for event search.",
     .schemes = "http https",
     .status = ANA_CONFIG_NOT_YET_SUPPORTED,
     .feature = "the Elasticsearch backend",
     .instead = "using the embedded store",
     ROW(elasticsearch_node)},
};

const struct ana_config_table ana_store_elasticsearch_config_table =
    ANA_CONFIG_TABLE("store/elasticsearch", rows);
