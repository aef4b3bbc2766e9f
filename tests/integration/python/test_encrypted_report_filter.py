"""A report template's campaign filter on an encrypted field: with
ENCRYPTED_FIELDS=properties.campaignId the stored events hold the campaign
id sealed and its blind index, and campaign_performance (an ad hoc query
filtered on campaignId) must match through the blind index: the CSV carries
the campaign's counts, the other campaign's events stay out."""

import csv
import io
import unittest

import harness
from test_reports import ReportsMixin, day, get
from test_rest import RestClient


class EncryptedCampaignFilterTest(ReportsMixin, harness.ServerTestCase):

    SERVER_ENV = {"ENCRYPTED_FIELDS": "properties.campaignId"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)
        when = day(-1) + "T10:00:00Z"
        events = [{"eventType": "track", "eventName": name, "timestamp": when,
                   "properties": {"campaignId": campaign, "groupId": "g1",
                                  "messageType": "text"}}
                  for name, campaign, n in (("message_sent", "c-123", 4),
                                            ("message_delivered", "c-123", 3),
                                            ("message_sent", "c-999", 5))
                  for _ in range(n)]
        status, _, r = cls.rest.request("POST", "/api/events/batch", {"events": events})
        assert status == 200 and r["accepted"] == len(events), r

    def test_campaign_report_filters_an_encrypted_campaign_id_through_its_blind_index(self):
        r = self.generate({"template": "campaign_performance", "format": "csv",
                           "parameters": {"campaignId": "c-123",
                                          "dateRange": {"start": day(-6), "end": day(0)}}})
        done = self.wait_done(r["reportId"])
        self.assertEqual(done["status"], "completed", done)
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"])
        self.assertEqual(status, 200)
        rows = [row[:2] for row in csv.reader(io.StringIO(body.decode("utf-8-sig")))]
        self.assertIn(["Sent", "4"], rows)
        self.assertIn(["Delivered", "3"], rows)


if __name__ == "__main__":
    unittest.main()
