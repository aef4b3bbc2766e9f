/* The spec's "Create Custom Metric" example:
 *   createMetric({name:'Message Delivery Rate', type:'gauge',
 *                 formula:'(delivered / sent) * 100', unit:'percentage',
 *                 aggregation:'avg', dimensions:['campaignId','groupId']})
 * Usage: create_metric [HOST:PORT] */
#include "common.h"

int main(int argc, char **argv) {
  analytics_client_t *client = example_client(argc, argv);
  const char *dimensions[] = {"campaignId", "groupId"};
  const analytics_metric_t metric = {
      .name = "Message Delivery Rate",
      .type = "gauge",
      .formula = "(delivered / sent) * 100",
      .unit = "percentage",
      .aggregation = "avg",
      .dimensions = dimensions,
      .dimension_count = 2,
  };
  analytics_error_t err;
  char *created = NULL;
  int rc, status;

  if (!client)
    return 1;
  rc = analytics_create_metric(client, &metric, &created, &err);
  status = example_result("createMetric", rc, created, &err);
  analytics_free(created);
  analytics_client_destroy(client);
  return status;
}
