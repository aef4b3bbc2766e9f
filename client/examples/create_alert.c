/* The spec's "Create Alert" example:
 *   createAlert({name:'High Error Rate', metric:'error_rate',
 *                condition:'greater_than', threshold:5, severity:'critical',
 *                channels:['email','slack']})
 * Usage: create_alert [HOST:PORT] */
#include "common.h"

int main(int argc, char **argv) {
  analytics_client_t *client = example_client(argc, argv);
  const char *channels[] = {"email", "slack"};
  const analytics_alert_t alert = {
      .name = "High Error Rate",
      .metric = "error_rate",
      .condition = "greater_than",
      .threshold = 5,
      .severity = "critical",
      .channels = channels,
      .channel_count = 2,
  };
  analytics_error_t err;
  char *created = NULL;
  int rc, status;

  if (!client)
    return 1;
  rc = analytics_create_alert(client, &alert, &created, &err);
  status = example_result("createAlert", rc, created, &err);
  analytics_free(created);
  analytics_client_destroy(client);
  return status;
}
