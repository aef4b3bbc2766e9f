"""A campaign report's counts from the rollups of stored metrics: once
metrics counting each event name by (campaignId, groupId, messageType) exist
and their rollups are complete, campaign_performance reads them instead of
scanning the events, and its file holds the same numbers as the scan's
(KPIs with their change against the previous period, the daily series, the
tables), also in a zone whose clock changes within the range; a metric
that does not match (a filter) leaves the report on the scan."""

import csv
import datetime
import io
import os
import random
import shutil
import time
import unittest
import uuid

import grpc

import harness
from test_reports import ReportsMixin, day, get
from test_rest import RestClient

NAMES = ("message_sent", "message_delivered", "message_read", "message_clicked")
ZONE = "America/New_York"  # its clock went back on 2026-11-01


class ReportRollupsTest(ReportsMixin, harness.ServerTestCase):

    SERVER_ENV = {"REPORT_AUTO_ROLLUPS": "false"}  # stored metrics only

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rest = RestClient(cls.rest_port)
        cls.mpb, mgrpc = cls.ns.analytics["metrics"]
        cls.epb, egrpc = cls.ns.analytics["events"]
        cls.metrics = mgrpc.MetricServiceStub(cls.channel)
        events = cls.epb.TrackEventsRequest()
        rnd = random.Random(5)
        now = int(time.time())
        for i in range(6000):  # 80 days: the range and its previous period
            e = events.events.add(event_type="track", event_name=NAMES[rnd.randrange(4)],
                                  event_id="rr-%d" % i)
            e.timestamp.seconds = now - rnd.randrange(80 * 86400)
            e.properties.update({"campaignId": "c%d" % rnd.randrange(3),
                                 "groupId": "g%d" % rnd.randrange(6),
                                 "messageType": ("text", "photo")[rnd.randrange(2)]})
        stub = egrpc.EventServiceStub(cls.channel)
        for k in range(0, len(events.events), 1000):
            r = stub.TrackEvents(cls.epb.TrackEventsRequest(events=events.events[k:k + 1000]),
                                 timeout=60)
            assert r.rejected == 0, r

    def csv_report(self, params):
        r = self.generate({"template": "campaign_performance", "parameters": params,
                           "format": "csv"})
        self.assertEqual(self.wait_done(r["reportId"])["status"], "completed")
        status, _, body = get(self.rest_port, "/api/reports/%s/download" % r["reportId"])
        self.assertEqual(status, 200)
        return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))

    def create(self, name, filtered=False):
        m = self.mpb.Metric(name="%s %s" % (name, uuid.uuid4().hex[:6]), type="counter",
                            formula="count(%s)" % name, aggregation="sum",
                            dimensions=["campaignId", "groupId", "messageType"])
        if filtered:
            m.filters.add(field="properties.campaignId", op="eq").value.string_value = "c1"
        mid = self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=m),
                                        timeout=30).metric_id
        req = self.mpb.GetMetricDataRequest(metric_id=mid, interval="1d")
        deadline = time.time() + 60
        while True:  # until its backfill completed
            try:
                self.metrics.GetMetricData(req, timeout=30,
                                           metadata=[("x-metric-source", "rollup")])
                return mid
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
                self.assertLess(time.time(), deadline)
                time.sleep(0.1)

    def test_report_counts_from_rollups_equal_the_scan(self):
        cases = [{"campaignId": "c1", "dateRange": {"start": day(-39), "end": day(-1)},
                  "timeZone": ZONE},
                 {"campaignId": "c2", "dateRange": {"start": day(-9), "end": day(0)}}]
        scanned = [self.csv_report(p) for p in cases]
        # A metric with a filter is no match: still the scan.
        self.create(NAMES[0], filtered=True)
        mark = self.server.log_mark()
        self.assertEqual(self.csv_report(cases[0]), scanned[0])
        self.assertFalse([l for l in self.server.log_lines(mark)
                          if "from the rollups" in l.get("msg", "")])
        for name in NAMES:
            self.create(name)
        mark = self.server.log_mark()
        for params, want in zip(cases, scanned):
            got = self.csv_report(params)
            self.assertEqual(got, want, params)
        used = [l for l in self.server.log_lines(mark) if "from the rollups" in l.get("msg", "")]
        self.assertEqual(len(used), len(cases))
        # The numbers are there: sends, a change against the previous period.
        flat = [c for row in scanned[0] for c in row]
        self.assertIn("Sent", flat)
        self.assertTrue(any(c.endswith("%") for c in flat) or "Delivery rate" in flat)

    def test_a_stored_metric_over_bare_names_leaves_the_server_answering(self):
        # Resolving a bare name reads the catalog: it must not happen while
        # the report lists the stored metrics (the catalog's lock is held
        # there), or the report and every later catalog call hang.
        m = self.mpb.Metric(name="bare ratio %s" % uuid.uuid4().hex[:6], type="gauge",
                            formula="(sent / delivered) * 100", aggregation="avg")
        self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=m), timeout=30)
        self.csv_report({"campaignId": "c1", "dateRange": {"start": day(-9), "end": day(0)}})
        self.metrics.ListMetrics(self.mpb.ListMetricsRequest(), timeout=10)

    def test_previous_period_is_as_many_local_days_across_dst(self):
        # 2026-10-26 to 2026-11-01 in New York: 7 days, the last 25 hours
        # (the clock went back). The previous period is 2026-10-19 00:00 to
        # 2026-10-26 00:00 local (EDT, UTC-4), not 169 hours before.
        utc = datetime.timezone.utc
        at = [datetime.datetime(2026, 10, 28, 16, tzinfo=utc)]  # in the range
        at += [datetime.datetime(2026, 10, 19, 3, 30, tzinfo=utc)] * 2  # 18th, 23:30 local
        at += [datetime.datetime(2026, 10, 19, 4, 30, tzinfo=utc)] * 4  # 19th, 00:30 local
        req = self.epb.TrackEventsRequest()
        for i, t in enumerate(at):
            e = req.events.add(event_type="track", event_name="message_sent",
                               event_id="dst-%d" % i)
            e.timestamp.FromDatetime(t)
            e.properties.update({"campaignId": "dst", "groupId": "g0"})
        _, egrpc = self.ns.analytics["events"]
        egrpc.EventServiceStub(self.channel).TrackEvents(req, timeout=30)
        rows = self.csv_report({"campaignId": "dst", "timeZone": ZONE,
                                "dateRange": {"start": "2026-10-26", "end": "2026-11-01"}})
        sent = [r for r in rows if r[:1] == ["Sent"]][0]
        self.assertEqual(sent[1], "1")
        self.assertAlmostEqual(float(sent[3]), -0.75)  # (1 - 4) / 4


def load_campaign_events(channel, epb, egrpc, n, days):
    events = epb.TrackEventsRequest()
    rnd = random.Random(7)
    now = int(time.time())
    for i in range(n):
        e = events.events.add(event_type="track", event_name=NAMES[rnd.randrange(4)],
                              event_id="ev-%d" % i)
        e.timestamp.seconds = now - rnd.randrange(days * 86400)
        e.properties.update({"campaignId": "c%d" % rnd.randrange(3),
                             "groupId": "g%d" % rnd.randrange(6),
                             "messageType": ("text", "photo")[rnd.randrange(2)]})
    stub = egrpc.EventServiceStub(channel)
    for k in range(0, len(events.events), 1000):
        r = stub.TrackEvents(epb.TrackEventsRequest(events=events.events[k:k + 1000]),
                             timeout=60)
        assert r.rejected == 0, r


def wait_rollups(test, stub, mpb, mid):
    req = mpb.GetMetricDataRequest(metric_id=mid, interval="1d")
    deadline = time.time() + 60
    while True:  # until its backfill completed
        try:
            stub.GetMetricData(req, timeout=30, metadata=[("x-metric-source", "rollup")])
            return
        except grpc.RpcError as e:
            test.assertEqual(e.code(), grpc.StatusCode.FAILED_PRECONDITION, e.details())
            test.assertLess(time.time(), deadline)
            time.sleep(0.1)


def csv_of(test, rest, port, body):
    status, _, r = rest.request("POST", "/api/reports", body)
    test.assertEqual(status, 200, r)
    deadline = time.time() + 60
    while True:
        status, _, g = rest.request("GET", "/api/reports/" + r["reportId"])
        if g["status"] in ("completed", "failed"):
            break
        test.assertLess(time.time(), deadline)
        time.sleep(0.05)
    test.assertEqual(g["status"], "completed", g)
    status, _, data = get(port, "/api/reports/%s/download" % r["reportId"])
    test.assertEqual(status, 200)
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


class EncryptedReportRollupsTest(ReportsMixin, harness.ServerTestCase):
    """An encrypted campaignId (and groupId): the counters' rollups are
    filtered through the campaign's blind index, as the scan is."""

    SERVER_ENV = {"ENCRYPTED_FIELDS": "properties.campaignId,properties.groupId",
                  "REPORT_AUTO_ROLLUPS": "false"}

    def test_encrypted_campaign_counts_from_rollups_equal_the_scan(self):
        rest = RestClient(self.rest_port)
        mpb, mgrpc = self.ns.analytics["metrics"]
        epb, egrpc = self.ns.analytics["events"]
        load_campaign_events(self.channel, epb, egrpc, 3000, 40)
        body = {"template": "campaign_performance", "format": "csv",
                "parameters": {"campaignId": "c1",
                               "dateRange": {"start": day(-14), "end": day(0)}}}
        scanned = csv_of(self, rest, self.rest_port, body)
        self.assertIn("Sent", [row[0] for row in scanned if row])
        stub = mgrpc.MetricServiceStub(self.channel)
        for name in NAMES:
            m = mpb.Metric(name="%s enc" % name, type="counter", formula="count(%s)" % name,
                           aggregation="sum", dimensions=["campaignId", "groupId", "messageType"])
            wait_rollups(self, stub, mpb, stub.CreateMetric(
                mpb.CreateMetricRequest(metric=m), timeout=30).metric_id)
        mark = self.server.log_mark()
        self.assertEqual(csv_of(self, rest, self.rest_port, body), scanned)
        self.assertTrue([l for l in self.server.log_lines(mark)
                         if "from the rollups" in l.get("msg", "")])


class SummaryRollupsTest(ReportsMixin, harness.ServerTestCase):
    """metric_summary reads a stored metric's rollups (also grouped by some
    of its dimensions, and its tile over every group); its file equals the
    one a server with REPORT_ROLLUPS=false scans for on a copy of the data."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        mpb, mgrpc = cls.ns.analytics["metrics"]
        epb, egrpc = cls.ns.analytics["events"]
        load_campaign_events(cls.channel, epb, egrpc, 4000, 30)
        stub = mgrpc.MetricServiceStub(cls.channel)
        cls.ids = []
        for formula, dims in (("count(message_sent)", ["groupId", "messageType"]),
                              ("count(message_delivered) / count(message_sent)", ["campaignId"])):
            m = mpb.Metric(name=formula, type="counter", formula=formula, aggregation="sum",
                           dimensions=dims)
            mid = stub.CreateMetric(mpb.CreateMetricRequest(metric=m), timeout=30).metric_id
            wait_rollups(unittest.TestCase(), stub, mpb, mid)
            cls.ids.append(mid)
        # The same data for a server that scans: stopped, copied, restarted.
        cls.server.stop()
        cls.scan = harness.Server(env={"REPORT_ROLLUPS": "false"}, log_level="warn")
        shutil.rmtree(cls.scan.data_dir)
        shutil.copytree(cls.server.data_dir, cls.scan.data_dir)
        # With ANA_TEST_EVENT_STORE=clickhouse the copy has a database of its own: it ships
        # its spool there as a new instance (its events are all in the spool).
        state = os.path.join(cls.scan.data_dir, "clickhouse.state")
        if os.path.exists(state):
            os.remove(state)
        cls.server.sigterm_at = None
        cls.server.start()
        cls.scan.start()

    @classmethod
    def tearDownClass(cls):
        cls.scan.stop()
        cls.scan.cleanup()
        super().tearDownClass()

    def test_summary_from_rollups_equals_the_scan(self):
        rest, scan_rest = RestClient(self.rest_port), RestClient(self.scan.http_port)
        cases = [{"metrics": self.ids, "interval": "1d",
                  "dateRange": {"start": day(-9), "end": day(0)}},
                 {"metrics": [self.ids[0]], "interval": "1d", "dimensions": ["groupId"],
                  "topN": 3, "dateRange": {"start": day(-20), "end": day(-1)},
                  "timeZone": ZONE}]
        for params in cases:
            body = {"template": "metric_summary", "format": "csv", "parameters": params}
            want = csv_of(self, scan_rest, self.scan.http_port, body)
            mark = self.server.log_mark()
            got = csv_of(self, rest, self.rest_port, body)
            self.assertIn("Total", [c for r in got for c in r])  # a table of groups
            # The generation time differs; every number must not.
            strip = [r for r in got if not (r and r[0].startswith("Generated"))]
            self.assertEqual(strip, [r for r in want if not (r and r[0].startswith("Generated"))],
                             params)
            used = [l for l in self.server.log_lines(mark)
                    if "answered from its rollups" in l.get("msg", "")]
            # Each metric's query and its tile over every group.
            self.assertEqual(len(used), 2 * len(params["metrics"]), params)


class AutoRollupsTest(ReportsMixin, harness.ServerTestCase):
    """No stored metric counts the campaign's events: the first report scans
    them and keeps its counts as rollups of its own; once backfilled, the
    next reports read those, with the numbers of the scan (an encrypted
    campaignId through its blind index)."""

    SERVER_ENV = {"ENCRYPTED_FIELDS": "properties.campaignId"}

    def test_report_counts_kept_as_rollups_equal_the_scan(self):
        rest = RestClient(self.rest_port)
        epb, egrpc = self.ns.analytics["events"]
        load_campaign_events(self.channel, epb, egrpc, 3000, 40)
        body = {"template": "campaign_performance", "format": "csv",
                "parameters": {"campaignId": "c1", "timeZone": ZONE,
                               "dateRange": {"start": day(-14), "end": day(0)}}}
        mark = self.server.log_mark()
        scanned = csv_of(self, rest, self.rest_port, body)
        self.assertFalse([l for l in self.server.log_lines(mark)
                          if "from the rollups" in l.get("msg", "")])
        self.assertIn("Sent", [row[0] for row in scanned if row])
        deadline = time.time() + 60
        while True:  # until the rollups kept by the first report are complete
            mark = self.server.log_mark()
            got = csv_of(self, rest, self.rest_port, body)
            self.assertEqual(got, scanned)
            if [l for l in self.server.log_lines(mark) if "from the rollups" in l.get("msg", "")]:
                break
            self.assertLess(time.time(), deadline)
            time.sleep(0.2)
        # Not a stored metric: the account's list is unchanged.
        mpb, mgrpc = self.ns.analytics["metrics"]
        listed = mgrpc.MetricServiceStub(self.channel).ListMetrics(mpb.ListMetricsRequest(),
                                                                   timeout=10)
        self.assertEqual(len(listed.metrics), 0)
