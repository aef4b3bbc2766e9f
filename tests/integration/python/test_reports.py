"""Reports end to end: the spec's "Generate Report" example over REST and
gRPC, each number of the PDF checked against GetMetricData for the same
range, XLSX (openpyxl) and CSV files, downloads (Range, ETag, 304, 409),
errors naming the JSON path, foreign ids NOT_FOUND, a full queue
RESOURCE_EXHAUSTED, kill -9 during generation, and a full disk."""

import csv
import datetime
import glob
import http.client
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import grpc

import authkit
import harness
from test_rest import RestClient

SPEC_REPORT = {
    "template": "campaign_performance",
    "parameters": {
        "campaignId": "123",
        "dateRange": {"start": "2024-01-01", "end": "2024-01-31"},
    },
    "format": "pdf",
}
TIMEOUT_S = 30


def day(offset):
    return (datetime.datetime.now(datetime.timezone.utc).date()
            + datetime.timedelta(days=offset)).isoformat()


def get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def pdf_text(data):
    import pypdf
    return "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(data)).pages)


class ReportsMixin:
    def req(self, verb, path, body=None, want=200, headers=None):
        status, _, resp = self.rest.request(verb, path, body, headers=headers)
        self.assertEqual(status, want, resp)
        return resp

    def generate(self, body, headers=None):
        r = self.req("POST", "/api/reports", body, headers=headers)
        self.assertTrue(r["reportId"])
        return r

    def wait_done(self, report_id, headers=None, timeout=TIMEOUT_S):
        end = time.time() + timeout
        while True:
            r = self.req("GET", "/api/reports/" + report_id, headers=headers)
            if r["status"] in ("completed", "failed") or time.time() > end:
                return r
            time.sleep(0.05)


class ReportsTest(ReportsMixin, harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)
        # Campaign 123 over the last days: 5 sent, 4 delivered, 2 read, 1 click;
        # and 3 sent of another campaign (filtered out).
        events = []
        when = day(-2) + "T10:00:00Z"
        for name, n, group, mtype in (("message_sent", 3, "g1", "text"),
                                      ("message_sent", 2, "g2", "photo"),
                                      ("message_delivered", 3, "g1", "text"),
                                      ("message_delivered", 1, "g2", "photo"),
                                      ("message_read", 2, "g1", "text"),
                                      ("message_clicked", 1, "g1", "text")):
            for _ in range(n):
                events.append({"eventType": "track", "eventName": name, "timestamp": when,
                               "properties": {"campaignId": "123", "groupId": group,
                                              "messageType": mtype}})
        for _ in range(3):
            events.append({"eventType": "track", "eventName": "message_sent", "timestamp": when,
                           "properties": {"campaignId": "999"}})
        status, _, r = cls.rest.request("POST", "/api/events/batch", {"events": events})
        assert status == 200 and r["accepted"] == len(events), r
        cls.params = {"campaignId": "123", "dateRange": {"start": day(-6), "end": day(0)}}

    def metric_total(self, name, formula):
        m = self.req("POST", "/api/metrics", {
            "name": name, "type": "gauge", "formula": formula, "aggregation": "sum",
            "filters": [{"field": "properties.campaignId", "op": "eq", "value": "123"}]})
        start = day(-6) + "T00:00:00Z"
        end = day(1) + "T00:00:00Z"
        d = self.req("GET", "/api/metrics/%s/data?from=%s&to=%s&interval=1d"
                     % (m["metricId"], start, end))
        return d["series"][0]["total"]

    def test_spec_example_as_written_makes_a_pdf(self):
        r = self.generate(SPEC_REPORT)
        self.assertEqual(r["status"], "pending")
        self.assertEqual(r["name"], "Campaign performance, 2024-01-01 to 2024-01-31")
        done = self.wait_done(r["reportId"])
        self.assertEqual(done["status"], "completed", done)
        self.assertEqual(done["runs"][0]["status"], "completed")
        status, h, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"])
        self.assertEqual(status, 200)
        self.assertEqual(h["content-type"], "application/pdf")
        self.assertTrue(body.startswith(b"%PDF-"))
        self.assertEqual(int(h["content-length"]), len(body))
        self.assertIn(".pdf", h["content-disposition"])
        self.assertIn("No data", pdf_text(body))

    def test_pdf_numbers_are_get_metric_data_numbers(self):
        r = self.generate(dict(SPEC_REPORT, parameters=self.params))
        done = self.wait_done(r["reportId"])
        self.assertEqual(done["status"], "completed", done)
        _, _, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"])
        text = pdf_text(body)
        sent = self.metric_total("r_sent", "count(message_sent)")
        delivered = self.metric_total("r_delivered", "count(message_delivered)")
        rate = self.metric_total("r_rate", "count(message_delivered) / count(message_sent)")
        self.assertEqual((sent, delivered), (5, 4))
        self.assertIn("Sent\n%d" % sent, text.replace("Delivered", "\nDelivered"))
        self.assertIn("%.1f%%" % (rate * 100), text)  # 80.0%
        self.assertIn("g1 3 3 2 1 100.0%", text)
        self.assertIn("photo 2 1", text)

    def test_xlsx_and_csv(self):
        import openpyxl
        x = self.generate(dict(SPEC_REPORT, parameters=self.params, format="xlsx"))
        c = self.generate(dict(SPEC_REPORT, parameters=self.params, format="csv"))
        self.assertEqual(self.wait_done(x["reportId"])["status"], "completed")
        self.assertEqual(self.wait_done(c["reportId"])["status"], "completed")
        status, h, body = get(self.rest_port, "/api/reports/%s/download" % x["reportId"])
        self.assertEqual(status, 200)
        self.assertIn("spreadsheetml", h["content-type"])
        wb = openpyxl.load_workbook(io.BytesIO(body))
        values = [v for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
                  for v in row]
        self.assertIn("Delivery rate", values)
        self.assertIn(5, values)
        self.assertTrue(any(ws._charts for ws in wb.worksheets) or
                        b"xl/charts/" in body)
        status, h, body = get(self.rest_port, "/api/reports/%s/download" % c["reportId"])
        self.assertEqual(status, 200)
        rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
        self.assertIn(["Sent", "5", "", ""], [r[:4] for r in rows])
        self.assertIn("g2", [r[0] for r in rows if r])

    def test_range_etag_and_409(self):
        r = self.generate(dict(SPEC_REPORT, parameters=self.params))
        self.wait_done(r["reportId"])
        path = "/api/reports/%s/download" % r["reportId"]
        status, h, whole = get(self.rest_port, path)
        self.assertEqual(status, 200)
        etag = h["etag"]
        status, _, _ = get(self.rest_port, path, {"If-None-Match": etag})
        self.assertEqual(status, 304)
        status, h, part = get(self.rest_port, path, {"Range": "bytes=10-19"})
        self.assertEqual(status, 206)
        self.assertEqual(part, whole[10:20])
        status, _, _ = get(self.rest_port, path, {"Range": "bytes=%d-" % (len(whole) + 5)})
        self.assertEqual(status, 416)
        runs = self.req("GET", "/api/reports/" + r["reportId"])["runs"]
        status, _, same = get(self.rest_port, path + "?runId=" + runs[0]["runId"])
        self.assertEqual(same, whole)
        # a scheduled report has no run: 409 naming why
        s = self.generate(dict(SPEC_REPORT, schedule="0 8 * * 1"))
        self.assertEqual(s["status"], "scheduled")
        self.assertIn("not run yet", s["error"])
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % s["reportId"])
        self.assertEqual(status, 409, body)
        self.assertEqual(json.loads(body)["code"], 9)

    def test_bad_input_names_the_json_path(self):
        cases = [
            (dict(SPEC_REPORT, template="nope"), "template"),
            (dict(SPEC_REPORT, format="docx"), "format"),
            (dict(SPEC_REPORT, parameters={"dateRange": SPEC_REPORT["parameters"]["dateRange"]}),
             "parameters.campaignId"),
            (dict(SPEC_REPORT, parameters=dict(SPEC_REPORT["parameters"], campaign="1")),
             "parameters.campaign"),
            (dict(SPEC_REPORT, parameters={"campaignId": "1",
                                           "dateRange": {"start": "2024-01-31",
                                                         "end": "2024-01-01"}}),
             "parameters.dateRange.end"),
            (dict(SPEC_REPORT, parameters=dict(SPEC_REPORT["parameters"], timeZone="Mars/Base")),
             "parameters.timeZone"),
            (dict(SPEC_REPORT, schedule="every day"), "schedule"),
        ]
        for body, path in cases:
            status, _, err = self.rest.request("POST", "/api/reports", body)
            self.assertEqual(status, 400, (body, err))
            fields = [v["field"] for d in err["details"] for v in d.get("fieldViolations", [])]
            self.assertEqual(fields, [path], err)

    def test_list_filters_and_pages(self):
        a = self.generate(dict(SPEC_REPORT, name="list-a"))
        self.wait_done(a["reportId"])
        reports = self.req("GET", "/api/reports?template=campaign_performance&status=completed"
                           "&pageSize=1000")["reports"]
        self.assertIn(a["reportId"], [r["reportId"] for r in reports])
        self.assertTrue(all(r["status"] == "completed" for r in reports))
        page = self.req("GET", "/api/reports?pageSize=1")
        self.assertEqual(len(page["reports"]), 1)
        self.assertTrue(page["nextPageToken"])
        self.req("GET", "/api/reports?status=bogus", want=400)

    def test_metric_summary(self):
        self.req("POST", "/api/metrics", {"name": "summary_sent", "type": "counter",
                                          "formula": "count(message_sent)",
                                          "dimensions": ["campaignId"]})
        r = self.generate({"template": "metric_summary", "format": "csv",
                           "parameters": {"metrics": ["summary_sent"],
                                          "dateRange": {"start": day(-6), "end": day(0)},
                                          "interval": "1d"}})
        done = self.wait_done(r["reportId"])
        self.assertEqual(done["status"], "completed", done)
        _, _, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"])
        text = body.decode()
        self.assertIn("summary_sent,8", text)  # the tile: every campaign
        self.assertIn("123,summary_sent,5", text)  # the table: by campaignId
        self.assertIn("999,summary_sent,3", text)
        bad = dict(r, parameters={"metrics": ["no_such_metric"],
                                  "dateRange": {"start": day(-1), "end": day(0)}})
        bad.pop("reportId")
        bad.pop("runs", None)
        r2 = self.generate({"template": "metric_summary", "format": "csv",
                            "parameters": bad["parameters"]})
        done = self.wait_done(r2["reportId"])
        self.assertEqual(done["status"], "failed")
        self.assertIn("parameters.metrics[0]", done["error"])

    def test_grpc_generate_get_download(self):
        pb, pb_grpc = self.ns.analytics["reports"]
        stub = pb_grpc.ReportServiceStub(self.channel)
        req = pb.GenerateReportRequest()
        req.report.template = "campaign_performance"
        req.report.format = "pdf"
        req.report.parameters.update(self.params)
        r = stub.GenerateReport(req, timeout=TIMEOUT_S)
        self.assertIn(r.status, ("pending", "running"))
        end = time.time() + TIMEOUT_S
        while time.time() < end:
            got = stub.GetReport(pb.GetReportRequest(report_id=r.report_id), timeout=TIMEOUT_S)
            if got.status == "completed":
                break
            time.sleep(0.05)
        self.assertEqual(got.status, "completed")
        chunks = list(stub.DownloadReport(pb.DownloadReportRequest(report_id=r.report_id),
                                          timeout=TIMEOUT_S))
        data = b"".join(c.data for c in chunks)
        self.assertEqual(chunks[0].content_type, "application/pdf")
        self.assertEqual(chunks[0].total_size, len(data))
        self.assertIn("Delivery rate", pdf_text(data))


class ReportsCyrillicTest(ReportsMixin, harness.ServerTestCase):
    """Its own server: its events would change the other tests' totals."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)

    def test_cyrillic_data_through_the_service_in_pdf_and_xlsx(self):
        # Telegram campaigns are often not in English: campaign, groups and
        # message types in Cyrillic, sent as events, come out as text in the
        # PDF (pypdf extracts them back, so the embedded font maps them) and
        # as cell values in the XLSX.
        import openpyxl
        campaign, group, mtype = "Весенняя рассылка", "Группа Север", "голосовое"
        when = day(-1) + "T09:00:00Z"
        events = [{"eventType": "track", "eventName": name, "timestamp": when,
                   "properties": {"campaignId": campaign, "groupId": group,
                                  "messageType": mtype}}
                  for name in ("message_sent", "message_sent", "message_delivered")]
        status, _, r = self.rest.request("POST", "/api/events/batch", {"events": events})
        self.assertEqual((status, r["accepted"]), (200, 3), r)
        params = {"campaignId": campaign, "dateRange": {"start": day(-6), "end": day(0)}}
        name = "Отчёт: " + campaign
        pdf = self.generate(dict(SPEC_REPORT, name=name, parameters=params))
        xlsx = self.generate(dict(SPEC_REPORT, name=name, parameters=params, format="xlsx"))
        self.assertEqual(self.wait_done(pdf["reportId"])["status"], "completed")
        self.assertEqual(self.wait_done(xlsx["reportId"])["status"], "completed")
        status, h, body = get(self.rest_port, "/api/reports/%s/download" % pdf["reportId"])
        self.assertEqual(status, 200)
        text = pdf_text(body)
        for want in (group, mtype, "%s 2 1" % group, "%s 2 1" % mtype):
            self.assertIn(want, text)
        # The file is named after the report, in its own script.
        self.assertIn("filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82-%D0%92%D0%B5%D1%81",
                      h["content-disposition"])
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % xlsx["reportId"])
        self.assertEqual(status, 200)
        wb = openpyxl.load_workbook(io.BytesIO(body))
        values = [v for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
                  for v in row]
        self.assertIn(group, values)
        self.assertIn(mtype, values)


class ReportsTenancyTest(ReportsMixin, harness.ServerTestCase):
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET}

    def test_foreign_report_ids_are_not_found(self):
        self.rest = RestClient(self.rest_port)
        a = {"Authorization": "Bearer " + authkit.hs256(authkit.claims(account="acme"))}
        b = {"Authorization": "Bearer " + authkit.hs256(authkit.claims(account="globex"))}
        r = self.generate(SPEC_REPORT, headers=a)
        self.assertEqual(self.wait_done(r["reportId"], headers=a)["status"], "completed")
        self.req("GET", "/api/reports/" + r["reportId"], headers=b, want=404)
        status, _, _ = get(self.rest_port, "/api/reports/%s/download" % r["reportId"], b)
        self.assertEqual(status, 404)
        ids = [x["reportId"] for x in self.req("GET", "/api/reports", headers=b).get("reports", [])]
        self.assertNotIn(r["reportId"], ids)


class ReportsQueueTest(ReportsMixin, harness.ServerTestCase):
    SERVER_ENV = {"REPORT_WORKERS": "1", "REPORT_QUEUE_MAX": "1"}

    def test_a_full_queue_is_resource_exhausted(self):
        self.rest = RestClient(self.rest_port)
        codes = []
        for _ in range(12):
            status, _, body = self.rest.request("POST", "/api/reports", SPEC_REPORT)
            codes.append(status)
            if status == 429:
                self.assertIn("REPORT_QUEUE_MAX", body["message"])
        self.assertIn(429, codes)
        self.assertEqual(codes[0], 200)


class ReportsCrashTest(ReportsMixin, harness.ServerTestCase):
    SERVER_ENV = {"REPORT_WORKERS": "1"}

    def test_kill_9_during_generation_then_restart_completes(self):
        self.rest = RestClient(self.rest_port)
        # A big report: 20 000 events of the campaign over 30 days.
        for b in range(20):
            events = [{"eventType": "track", "eventName": "message_sent",
                       "timestamp": day(-(i % 30)) + "T12:00:00Z",
                       "properties": {"campaignId": "1", "groupId": "g%d" % (i % 50)}}
                      for i in range(1000)]
            self.req("POST", "/api/events/batch", {"events": events})
        params = {"campaignId": "1", "dateRange": {"start": day(-30), "end": day(0)}}
        ids = [self.generate(dict(SPEC_REPORT, parameters=params))["reportId"]
               for _ in range(4)]
        end = time.time() + TIMEOUT_S
        running = None
        while time.time() < end and not running:
            listed = self.req("GET", "/api/reports?status=running").get("reports", [])
            running = listed[0]["reportId"] if listed else None
        self.assertTrue(running, "no run seen running")
        self.server.kill()
        self.server.start()
        self.rest = RestClient(self.server.http_port)
        for i in ids:
            done = self.wait_done(i, timeout=60)
            self.assertEqual(done["status"], "completed", done)
        again = self.req("GET", "/api/reports/" + running)
        self.assertGreaterEqual(again["runs"][0]["attempts"], 2)
        reports_dir = os.path.join(self.server.workdir, "reports")
        self.assertEqual(glob.glob(os.path.join(reports_dir, "*", ".tmp-*")), [])


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("mount"), "needs root to mount a tmpfs")
class ReportsFullDiskTest(ReportsMixin, unittest.TestCase):

    def test_full_disk_fails_the_run_and_leaves_nothing(self):
        mnt = tempfile.mkdtemp(prefix="ana-reports-tmpfs-")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt]).returncode:
            self.skipTest("cannot mount a tmpfs")
        server = harness.Server(env={"REPORTS_DIR": mnt})
        try:
            server.start()
            self.rest = RestClient(server.http_port)
            r = self.generate(SPEC_REPORT)
            done = self.wait_done(r["reportId"])
            self.assertEqual(done["status"], "failed", done)
            self.assertIn("space", done["error"].lower())
            files = [f for _, _, fs in os.walk(mnt) for f in fs]
            self.assertEqual(files, [])
            status, _, body = get(server.http_port, "/api/reports/%s/download" % r["reportId"])
            self.assertEqual(status, 409, body)
        finally:
            server.stop()
            server.cleanup()
            subprocess.run(["umount", mnt])
            os.rmdir(mnt)


if __name__ == "__main__":
    unittest.main()
