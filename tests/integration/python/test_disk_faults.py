"""Disk faults: a file-size limit (the disk is full) and failing fsync. Neither
may produce an acknowledgement for an event that is not durable, crash the
server, or damage the database."""

import os
import resource
import signal
import sqlite3
import unittest
import uuid

import grpc

import harness
import stubs


def fault_library():
    build = os.path.dirname(os.path.dirname(os.path.abspath(harness.binary_path())))
    return os.path.join(build, "tests", "faults", "libana_fsync_fault.so")


class FaultBase(unittest.TestCase):

    def setUp(self):
        self.ns = stubs.load()
        self.pb, grpc_mod = self.ns.analytics["events"]
        self.grpc_mod = grpc_mod
        self.acked = set()

    def connect(self, server):
        self.stub = self.grpc_mod.EventServiceStub(server.channel())

    def track(self, n=10, size=100):
        """One batch; returns the gRPC error or None, recording what was acked."""
        ids = [uuid.uuid4().hex for _ in range(n)]
        events = [self.pb.Event(event_id=i, event_name="fault", event_type="test") for i in ids]
        for e in events:
            # Random (the store compresses event bodies): each batch takes room.
            e.properties.update({"pad": os.urandom(size // 2 + 1).hex()[:size]})
        try:
            resp = self.stub.TrackEvents(self.pb.TrackEventsRequest(events=events), timeout=10)
        except grpc.RpcError as e:
            return e
        for r in resp.results:
            self.assertEqual(r.status, self.pb.EventResult.ACCEPTED)
            self.acked.add(r.event_id)
        return None

    def check_database(self, data_dir):
        db = sqlite3.connect(os.path.join(data_dir, "analytics.db"))
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            # A canonical lower-case UUID is stored as its 16 bytes.
            counts = {(str(uuid.UUID(bytes=i)) if isinstance(i, bytes) else i): n
                      for i, n in db.execute("SELECT event_id, COUNT(*) FROM events"
                                             " GROUP BY event_id")}
        finally:
            db.close()
        missing = [i for i in self.acked if counts.get(i) != 1]
        self.assertEqual(missing, [], "acknowledged events not stored exactly once")
        self.assertTrue(all(c == 1 for c in counts.values()))


class FullDiskTest(FaultBase):

    def test_file_size_limit_gives_no_ack_and_a_clear_error(self):
        limit = 3 * 1024 * 1024

        def limit_files():
            # Writes past the limit fail with EFBIG, as on a full disk (and
            # the signal that would kill the process is ignored).
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        server = harness.start_server(self, preexec=limit_files, log_level="info")
        self.connect(server)
        error = None
        for _ in range(400):
            error = self.track(n=50, size=1000)
            if error is not None:
                break
        self.assertIsNotNone(error, "the size limit was never reached")
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
        self.assertIn("event store", error.details())
        self.assertGreater(len(self.acked), 0)
        # The server stays up and keeps answering: a refusal as above, or an
        # acknowledgement when a checkpoint started the WAL over and left room
        # for a commit's staged row (then it is stored, as checked below).
        again = self.track(n=50, size=1000)
        if again is not None:
            self.assertEqual(again.code(), grpc.StatusCode.UNAVAILABLE, again.details())
            self.assertIn("event store", again.details())
        self.assertEqual(server.stop(), 0)
        # With room again, everything acknowledged is there, once (events the
        # mover could not move for lack of room are moved at the next start).
        second = harness.start_server(self, env={"DATA_DIR": server.data_dir})
        self.connect(second)
        self.assertIsNone(self.track(n=5))
        self.assertEqual(second.stop(), 0)
        self.check_database(server.data_dir)


class FailingFsyncTest(FaultBase):

    def test_failing_fsync_gives_no_ack_and_the_database_survives(self):
        lib = fault_library()
        if not os.path.exists(lib):
            self.fail("fault library %s is not built" % lib)
        trigger = os.path.join(os.path.dirname(harness.binary_path()), "..",
                               "fsync-fault-" + uuid.uuid4().hex)
        trigger = os.path.abspath(trigger)
        self.addCleanup(lambda: os.path.exists(trigger) and os.remove(trigger))
        env = {"LD_PRELOAD": lib, "ANA_FAULT_FSYNC_FILE": trigger,
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
        server = harness.start_server(self, env=env, log_level="info")
        self.connect(server)
        for _ in range(5):
            self.assertIsNone(self.track())
        open(trigger, "w").close()
        errors = [self.track() for _ in range(5)]
        self.assertTrue(all(e is not None for e in errors), "acknowledged without fsync")
        self.assertEqual(errors[0].code(), grpc.StatusCode.UNAVAILABLE, errors[0].details())
        os.remove(trigger)
        for _ in range(5):
            self.assertIsNone(self.track())
        self.assertEqual(server.stop(), 0)
        self.check_database(server.data_dir)


if __name__ == "__main__":
    unittest.main()
