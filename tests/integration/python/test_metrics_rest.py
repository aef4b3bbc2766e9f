"""The spec's metric example end to end over REST (in-process bridge and the
remote analytics-restbridge): track `sent` and `delivered` events for two
campaigns with POST /api/events/batch, create the delivery-rate metric with
POST /api/metrics, and read the rate per campaign and group from
GET /api/metrics/{id}/data."""

import time
import unittest
import urllib.parse
import uuid

import harness
from test_rest import RestClient


def rfc3339(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class MetricsRestTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    def post(self, path, body):
        status, _, resp = self.rest.request("POST", path, body)
        self.assertEqual(status, 200, resp)
        return resp

    def test_spec_delivery_rate_over_rest(self):
        camp_a, camp_b = "A" + uuid.uuid4().hex[:6], "B" + uuid.uuid4().hex[:6]
        base = (int(time.time()) // 3600 - 3) * 3600

        def ev(name, at, campaign, group):
            return {"eventType": "message", "eventName": name, "timestamp": rfc3339(at),
                    "properties": {"campaignId": campaign, "groupId": group,
                                   "messageType": "text", "charactersCount": 150}}

        events = [ev("sent", base + i, camp_a, "1") for i in range(4)]
        events += [ev("delivered", base + i, camp_a, "1") for i in range(3)]
        events += [ev("sent", base + 60 + i, camp_b, "2") for i in range(2)]
        events += [ev("delivered", base + 60, camp_b, "2")]
        resp = self.post("/api/events/batch", {"events": events})
        self.assertEqual(resp["accepted"], len(events))

        metric = self.post("/api/metrics", {
            "name": "Message Delivery Rate %s" % uuid.uuid4().hex,
            "type": "gauge", "formula": "(delivered / sent) * 100", "unit": "percentage",
            "aggregation": "avg", "dimensions": ["campaignId", "groupId"],
            "filters": [{"field": "campaignId", "op": "in", "value": [camp_a, camp_b]}]})
        self.assertTrue(metric["metricId"])

        query = urllib.parse.urlencode({"from": rfc3339(base), "to": rfc3339(base + 3600),
                                        "interval": "1h"})
        status, _, data = self.rest.request(
            "GET", "/api/metrics/%s/data?%s" % (metric["metricId"], query))
        self.assertEqual(status, 200, data)
        totals = {(s["dimensions"]["campaignId"], s["dimensions"]["groupId"]): s["total"]
                  for s in data["series"]}
        self.assertAlmostEqual(totals[(camp_a, "1")], 75.0)
        self.assertAlmostEqual(totals[(camp_b, "2")], 50.0)

        status, _, got = self.rest.request("GET", "/api/metrics/%s" % metric["metricId"])
        self.assertEqual((status, got["formula"]), (200, "(delivered / sent) * 100"))
        status, _, err = self.rest.request("POST", "/api/metrics", {"name": "x",
                                                                    "formula": "(sent / "})
        self.assertEqual(status, 400, err)
        self.assertIn("formula", err["details"][0]["fieldViolations"][0]["field"])


class MetricsRestRemoteTest(MetricsRestTest):
    BRIDGE = "remote"


if __name__ == "__main__":
    unittest.main()
