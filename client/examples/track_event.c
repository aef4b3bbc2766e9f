/* The spec's "Track Event" example:
 *   trackEvent({eventType:'message', eventName:'message_sent',
 *               properties:{campaignId:'123', groupId:'456',
 *                           messageType:'text', charactersCount:150}})
 * analytics_track queues the event and returns at once; analytics_flush
 * waits until the background thread has delivered it.
 * Usage: track_event [HOST:PORT] */
#include "common.h"

int main(int argc, char **argv) {
  analytics_client_t *client = example_client(argc, argv);
  analytics_event_t *event = analytics_event_new("message", "message_sent");
  analytics_error_t err;
  analytics_stats_t stats;
  int rc, status;

  if (!client || !event)
    return 1;
  analytics_event_set_string(event, "campaignId", "123");
  analytics_event_set_string(event, "groupId", "456");
  analytics_event_set_string(event, "messageType", "text");
  analytics_event_set_number(event, "charactersCount", 150);

  rc = analytics_track(client, event, &err);
  analytics_event_destroy(event);
  if (rc == 0)
    rc = analytics_flush(client, 10000, &err);
  analytics_stats(client, &stats);
  if (rc == 0 && stats.accepted + stats.duplicates != 1) {
    fprintf(stderr, "trackEvent: the server did not store the event (rejected %llu)\n",
            (unsigned long long)stats.rejected);
    rc = ANALYTICS_ERR_SERVER;
  }
  status = example_result("trackEvent", rc, NULL, &err);
  printf("sent %llu, accepted %llu, duplicates %llu, rejected %llu, retries %llu\n",
         (unsigned long long)stats.sent, (unsigned long long)stats.accepted,
         (unsigned long long)stats.duplicates, (unsigned long long)stats.rejected,
         (unsigned long long)stats.retries);
  analytics_client_destroy(client);
  return status;
}
