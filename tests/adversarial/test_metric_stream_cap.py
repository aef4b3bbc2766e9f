"""Issue 14, point 9 (server part): one client cannot hold all the live metric
streams (256 at once server-wide). METRIC_STREAMS_PER_PEER (3 here, 32 by
default) bounds the StreamMetric subscriptions of one client IP over all
its connections; further ones end with RESOURCE_EXHAUSTED naming the limit,
and a subscription that ends makes room again. With authentication the cap
is per principal (JWT subject or API key), not per IP: two users behind one
address each get their own streams, and one user cannot open more by
switching connections.
"""

import os
import sys
import time
import unittest
import uuid

import grpc

from adversary import AttackTestCase, harness

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration",
                                "python"))
import authkit  # noqa: E402

CAP = 3


class MetricStreamCapTest(AttackTestCase):
    SERVER_ENV = {"METRIC_STREAMS_PER_PEER": CAP}

    def setUp(self):
        super().setUp()
        self.mpb, mgrpc = self.ns.analytics["metrics"]
        self.rpb, self.rgrpc = self.ns.analytics["realtime"]
        self.metrics = mgrpc.MetricServiceStub(self.channel)

    def create(self):
        m = self.mpb.Metric(name="cap-%s" % uuid.uuid4().hex, formula="count(capped)")
        return self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=m), timeout=10)

    def subscribe(self, metric_id):
        """StreamMetric on its own connection (the limit is per IP)."""
        ch = grpc.insecure_channel(self.server.target,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        self.addCleanup(ch.close)
        stub = self.rgrpc.RealtimeServiceStub(ch)
        reader = harness.StreamReader(stub.StreamMetric(
            self.rpb.StreamMetricRequest(metric_id=metric_id), timeout=60))
        self.addCleanup(reader.cancel)
        return reader

    def test_one_peer_cannot_hold_more_metric_streams_than_the_cap(self):
        ids = [self.create().metric_id for _ in range(CAP + 2)]
        with self.rss_watch():
            held = [self.subscribe(ids[i]) for i in range(CAP)]
            for r in held:
                self.assertFalse(r.wait_end(1.0), "a stream within the cap ended: %s %s"
                                 % (r.code, r.details))
            for metric_id in (ids[CAP], ids[0]):  # a new stream, and one already held
                over = self.subscribe(metric_id)
                self.assertTrue(over.wait_end(5), "subscription %d of one IP stayed open"
                                % (CAP + 1))
                self.assertEqual(over.code, grpc.StatusCode.RESOURCE_EXHAUSTED, over.details)
                self.assertIn("METRIC_STREAMS_PER_PEER", over.details)
            # One ends: room for one more.
            held[0].cancel()
            self.assertTrue(held[0].wait_end(5))
            deadline = time.monotonic() + 5
            while True:
                again = self.subscribe(ids[CAP + 1])
                if not again.wait_end(1.0) or time.monotonic() > deadline:
                    break
            self.assertFalse(again.ended.is_set(), "no room after a subscription ended: %s %s"
                             % (again.code, again.details))
            for r in held[1:] + [again]:
                r.cancel()
        self.assert_survived()


class MetricStreamCapPerPrincipalTest(AttackTestCase):
    SERVER_ENV = {"METRIC_STREAMS_PER_PEER": CAP, "JWT_HS256_SECRET": authkit.SECRET}

    def setUp(self):
        super().setUp()
        self.mpb, mgrpc = self.ns.analytics["metrics"]
        self.rpb, self.rgrpc = self.ns.analytics["realtime"]
        self.metrics = mgrpc.MetricServiceStub(self.channel)

    def md(self, subject):
        tok = authkit.hs256(authkit.claims(account="capped", roles=("admin",), sub=subject))
        return (("authorization", "Bearer " + tok),)

    def create(self):
        m = self.mpb.Metric(name="cap-%s" % uuid.uuid4().hex, formula="count(capped)")
        return self.metrics.CreateMetric(self.mpb.CreateMetricRequest(metric=m),
                                         metadata=self.md("owner"), timeout=10)

    def subscribe(self, metric_id, subject="user-a"):
        ch = grpc.insecure_channel(self.server.target,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        self.addCleanup(ch.close)
        stub = self.rgrpc.RealtimeServiceStub(ch)
        reader = harness.StreamReader(stub.StreamMetric(
            self.rpb.StreamMetricRequest(metric_id=metric_id), metadata=self.md(subject),
            timeout=60))
        self.addCleanup(reader.cancel)
        return reader

    def test_users_behind_one_address_shared_one_cap(self):
        ids = [self.create().metric_id for _ in range(CAP + 1)]
        with self.rss_watch():
            a = [self.subscribe(ids[i], "user-a") for i in range(CAP)]
            b = [self.subscribe(ids[i], "user-b") for i in range(CAP)]
            time.sleep(1.0)
            for r in a + b:
                self.assertFalse(r.ended.is_set(), "a stream within its principal's cap ended: "
                                 "%s %s" % (r.code, r.details))
            over = self.subscribe(ids[CAP], "user-a")
            self.assertTrue(over.wait_end(5), "user-a's stream %d stayed open" % (CAP + 1))
            self.assertEqual(over.code, grpc.StatusCode.RESOURCE_EXHAUSTED, over.details)
            self.assertIn("METRIC_STREAMS_PER_PEER: principal capped/user-a", over.details)
            for r in a + b:
                r.cancel()
        self.assert_survived()


if __name__ == "__main__":
    unittest.main()
