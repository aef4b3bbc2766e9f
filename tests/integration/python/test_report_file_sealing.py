"""Report files sealed at rest: with ENCRYPTED_FIELDS set, a report rendered
with an admin's pii:read holds the e-mails of a metric grouped by an
encrypted field in clear; its file in REPORTS_DIR is sealed with the
account's data key (no byte of any file there holds an e-mail, nor even the
metric's name), and the REST and gRPC downloads (whole, and a byte range)
give the clear file."""

import os
import time
import uuid

import authkit
import harness
from test_reports import day, get
from test_background_roles import RoleRest

TIMEOUT_S = 15
ACCOUNT = "bg-roles"  # RoleRest's
E1 = "seal-ann-%s@example.org" % uuid.uuid4().hex[:6]
E2 = "seal-bob-%s@example.org" % uuid.uuid4().hex[:6]


class ReportFileSealingTest(harness.ServerTestCase):
    SERVER_ENV = {"ENCRYPTED_FIELDS": "properties.email",
                  "JWT_HS256_SECRET": "analytics-test-secret-0123456789abcdef"}

    def req(self, verb, path, body=None):
        status, _, resp = self.admin.request(verb, path, body)
        self.assertEqual(status, 200, resp)
        return resp

    def test_report_file_is_sealed_at_rest_and_clear_when_downloaded(self):
        self.admin = RoleRest(self.rest_port, "admin")
        metric = "sealed_signups_" + uuid.uuid4().hex[:8]
        self.req("POST", "/api/metrics", {
            "name": metric, "type": "counter", "formula": "count(seal_signup)",
            "aggregation": "sum", "dimensions": ["email"]})
        evs = [{"eventType": "track", "eventName": "seal_signup", "properties": {"email": e}}
               for e in (E1, E1, E2)]
        self.assertEqual(self.req("POST", "/api/events/batch", {"events": evs})["accepted"], 3)
        r = self.req("POST", "/api/reports", {
            "template": "metric_summary", "format": "csv",
            "parameters": {"metrics": [metric], "dimensions": ["email"],
                           "dateRange": {"start": day(-1), "end": day(1)}, "interval": "1d"}})
        deadline = time.time() + TIMEOUT_S
        while True:
            done = self.req("GET", "/api/reports/" + r["reportId"])
            if done["status"] in ("completed", "failed") or time.time() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(done["status"], "completed", done)

        # At rest: nothing of the report in clear.
        reports_dir = os.path.join(self.server.workdir, "reports")
        files = 0
        for root, _, names in os.walk(reports_dir):
            for fname in names:
                with open(os.path.join(root, fname), "rb") as f:
                    data = f.read()
                files += 1
                for secret in (E1, E2, metric):
                    self.assertFalse(secret.encode() in data, "%s holds %s" % (fname, secret))
        self.assertEqual(files, 1)

        # Downloaded: the clear file, over REST and gRPC, whole and by range.
        status, headers, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"],
                                    headers=authkit.bearer(self.admin.token))
        self.assertEqual(status, 200, body)
        text = body.decode("utf-8-sig")
        self.assertIn(E1, text)
        self.assertIn(E2, text)
        self.assertIn(metric, text)
        pb, pb_grpc = self.ns.analytics["reports"]
        stub = pb_grpc.ReportServiceStub(self.channel)
        md = [("authorization", "Bearer " + self.admin.token)]
        chunks = list(stub.DownloadReport(pb.DownloadReportRequest(report_id=r["reportId"]),
                                          timeout=TIMEOUT_S, metadata=md))
        data = b"".join(c.data for c in chunks)
        self.assertEqual(data, body)
        self.assertEqual(chunks[0].total_size, len(body))
        chunks = list(stub.DownloadReport(
            pb.DownloadReportRequest(report_id=r["reportId"], offset=5, length=20),
            timeout=TIMEOUT_S, metadata=md))
        self.assertEqual(b"".join(c.data for c in chunks), body[5:25])


if __name__ == "__main__":
    import unittest
    unittest.main()
