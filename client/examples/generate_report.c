/* The spec's "Generate Report" example:
 *   generateReport({template:'campaign_performance',
 *                   parameters:{campaignId:'123',
 *                               dateRange:{start:'2024-01-01', end:'2024-01-31'}},
 *                   format:'pdf'})
 * Usage: generate_report [HOST:PORT] */
#include "common.h"

int main(int argc, char **argv) {
  analytics_client_t *client = example_client(argc, argv);
  const analytics_report_t report = {
      .template_name = "campaign_performance",
      .parameters_json = "{\"campaignId\": \"123\","
                         " \"dateRange\": {\"start\": \"2024-01-01\", \"end\": \"2024-01-31\"}}",
      .format = "pdf",
  };
  analytics_error_t err;
  char *result = NULL;
  int rc, status;

  if (!client)
    return 1;
  rc = analytics_generate_report(client, &report, &result, &err);
  status = example_result("generateReport", rc, result, &err);
  analytics_free(result);
  analytics_client_destroy(client);
  return status;
}
