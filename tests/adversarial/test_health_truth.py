"""Issue 14, point 7: health tells the truth.

gRPC health service "" and REST /health are readiness: NOT_SERVING / 503
while the store cannot write. The gRPC service "liveness" stays SERVING then
(a restart would not help). Watch("") hears the change. The server starts on
a full disk: reads work, writes answer UNAVAILABLE, readiness says why.

Two ways to fill the disk:
  - RLIMIT_FSIZE (as tests/integration/python/test_disk_faults.py): writes
    past the limit fail, the server's statvfs still sees room;
  - a small tmpfs filled to the last block (needs mount rights: root or
    CAP_SYS_ADMIN; skipped otherwise), a real full filesystem.

The bridge heartbeat part of readiness (REST loop stalled for 5 s): the
REST bridge's thread alone ("ana-http") is stopped with ptrace (the other
threads run on), as a callback stuck in it would; gRPC readiness goes
NOT_SERVING, liveness stays SERVING (stalled 5 s, not 30), and both come
back when the thread runs again; SIGTERM with that thread hung still ends
the process within SHUTDOWN_GRACE_MS (exit 1, the forced stop). Skipped
where ptrace is not permitted.
tests/unit/test_heartbeat.c covers the beats themselves.
"""

import ctypes

import os
import resource
import signal
import subprocess
import tempfile
import time
import unittest
import uuid

import grpc

from adversary import harness, raw_http, status_codes, stubs

LIMIT = 512 * 1024  # RLIMIT_FSIZE: the database outgrows it after a few batches
LIVENESS = "liveness"


class HealthTruthBase(unittest.TestCase):

    def setUp(self):
        self.ns = stubs.load()
        self.pb, self.events_grpc = self.ns.analytics["events"]
        self.hpb = self.ns.health_pb2

    def connect(self, server):
        ch = server.channel()
        self.events = self.events_grpc.EventServiceStub(ch)
        self.health = self.ns.health_pb2_grpc.HealthStub(ch)

    def check(self, service):
        return self.health.Check(self.hpb.HealthCheckRequest(service=service), timeout=5).status

    def rest_health(self, server):
        data = raw_http(server.rest_port, "GET /health HTTP/1.1\r\nHost: localhost\r\n"
                        "Connection: close\r\n\r\n", until_close=True)
        codes = status_codes(data)
        self.assertTrue(codes, "/health gave no answer: %r" % data[:200])
        return codes[0], data

    def track(self, n=50, size=2000, name="truth"):
        events = [self.pb.Event(event_id=uuid.uuid4().hex, event_name=name, event_type="t")
                  for _ in range(n)]
        for e in events:
            e.properties.update({"pad": "p" * size})
        try:
            self.events.TrackEvents(self.pb.TrackEventsRequest(events=events), timeout=10)
        except grpc.RpcError as e:
            return e
        return None

    def wait_status(self, service, want, timeout=3.0):
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = self.check(service)
            if got == want:
                return
            time.sleep(0.05)
        self.fail("Check(%r) is %s, not %s, after %.1f s" % (
            service, self.hpb.HealthCheckResponse.ServingStatus.Name(got),
            self.hpb.HealthCheckResponse.ServingStatus.Name(want), timeout))


class FileSizeLimitTest(HealthTruthBase):

    def test_full_disk_takes_grpc_readiness_down_and_leaves_liveness_up(self):
        def limit_files():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

        server = harness.start_server(self, preexec=limit_files, log_level="info")
        self.connect(server)
        SERVING, NOT_SERVING = self.hpb.HealthCheckResponse.SERVING, \
            self.hpb.HealthCheckResponse.NOT_SERVING
        watch = harness.StreamReader(self.health.Watch(self.hpb.HealthCheckRequest(service=""),
                                                       timeout=60))
        self.addCleanup(watch.cancel)
        first = watch.next(timeout=5)
        self.assertIsNotNone(first, "Watch(\"\") sent nothing")
        self.assertEqual(first.status, SERVING)

        error = None
        for _ in range(100):
            error = self.track()
            if error is not None:
                break
        self.assertIsNotNone(error, "the file-size limit was never reached")
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())

        # Readiness on both transports, liveness stays.
        # gRPC readiness follows within a moment (evaluated 4 times a second).
        self.wait_status("", NOT_SERVING, timeout=2)
        self.assertEqual(self.check(LIVENESS), SERVING)
        code, data = self.rest_health(server)
        self.assertEqual(code, 503, data[:300])
        # Watch("") followed the change.
        changed = watch.next(timeout=3)
        self.assertIsNotNone(changed, "Watch(\"\") did not hear the change")
        self.assertEqual(changed.status, NOT_SERVING)
        self.assertTrue(server.alive())


PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
WALL = 0x40000000  # __WALL: wait for a thread that is not a child
BRIDGE_THREAD = "ana-http"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.ptrace.restype = ctypes.c_long


def thread_of(pid, name):
    """The id of pid's thread called name (its comm), or None."""
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                if f.read().strip() == name:
                    return int(tid)
        except OSError:
            pass
    return None


def can_ptrace():
    child = subprocess.Popen(["sleep", "5"])
    try:
        if _libc.ptrace(PTRACE_SEIZE, child.pid, None, None) != 0:
            return False
        _libc.ptrace(PTRACE_DETACH, child.pid, None, None)
        return True
    finally:
        child.kill()
        child.wait()


class StoppedThread:
    """Stops one thread of another process until resume(): PTRACE_SEIZE and
    PTRACE_INTERRUPT on its thread id stop that thread only."""

    def __init__(self, tid):
        self.tid = tid
        if _libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
            raise OSError(ctypes.get_errno(), "PTRACE_SEIZE %d" % tid)
        if _libc.ptrace(PTRACE_INTERRUPT, tid, None, None) != 0:
            raise OSError(ctypes.get_errno(), "PTRACE_INTERRUPT %d" % tid)
        os.waitpid(tid, WALL)
        self.stopped = True

    def resume(self):
        if self.stopped:
            self.stopped = False
            _libc.ptrace(PTRACE_DETACH, self.tid, None, None)


@unittest.skipUnless(can_ptrace(), "ptrace is not permitted here")
class BridgeStallTest(HealthTruthBase):

    def test_hung_rest_bridge_left_grpc_readiness_serving(self):
        server = harness.start_server(self, log_level="info")
        self.connect(server)
        SERVING, NOT_SERVING = self.hpb.HealthCheckResponse.SERVING, \
            self.hpb.HealthCheckResponse.NOT_SERVING
        self.assertEqual(self.check(""), SERVING)
        tid = thread_of(server.proc.pid, BRIDGE_THREAD)
        self.assertIsNotNone(tid, "no thread named %s in analyticsd" % BRIDGE_THREAD)

        stop = StoppedThread(tid)
        self.addCleanup(stop.resume)
        started = time.monotonic()
        # Readiness: NOT_SERVING once the loop has not turned for 5 s.
        self.wait_status("", NOT_SERVING, timeout=8)
        self.assertGreaterEqual(time.monotonic() - started, 4.5)
        # Liveness: a 5 s stall is no reason for a restart.
        self.assertEqual(self.check(LIVENESS), SERVING)
        # The rest of the server works on: events are accepted over gRPC.
        self.assertIsNone(self.track(n=5, size=10, name="while-stalled"))

        stop.resume()
        self.wait_status("", SERVING, timeout=3)
        code, data = self.rest_health(server)
        self.assertEqual(code, 200, data[:300])
        self.assertTrue(any("REST bridge has not turned its loop" in line.get("msg", "")
                            for line in server.log_lines()),
                        "no log line saying why the server is not ready")
        self.assertEqual(server.stop(), 0)

    def test_sigterm_with_a_hung_rest_bridge_ends_within_the_grace_period(self):
        server = harness.start_server(self, log_level="info")
        tid = thread_of(server.proc.pid, BRIDGE_THREAD)
        self.assertIsNotNone(tid, "no thread named %s in analyticsd" % BRIDGE_THREAD)
        stop = StoppedThread(tid)
        self.addCleanup(stop.resume)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        deadline = started + server.grace_ms / 1000.0 + 3
        rc = None
        while rc is None and time.monotonic() < deadline:
            try:  # the stopped thread is ours to reap once the process ends
                os.waitpid(tid, WALL | os.WNOHANG)
            except ChildProcessError:
                pass
            rc = server.proc.poll()
            time.sleep(0.05)
        stop.stopped = False  # gone with the process
        self.assertIsNotNone(rc, "analyticsd still running %.1f s after SIGTERM with its REST "
                             "thread hung (grace %d ms)" % (time.monotonic() - started,
                                                            server.grace_ms))
        self.assertEqual(rc, 1, "a forced stop exits 1")
        self.assertTrue(any("stopped with" in line.get("msg", "") for line in server.log_lines()),
                        "no log line saying the stop was forced")


def can_mount_tmpfs():
    d = tempfile.mkdtemp(prefix="ana-tmpfs-probe-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", d],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if r.returncode != 0:
            return False
        subprocess.run(["umount", d], check=False)
        return True
    except OSError:
        return False
    finally:
        os.rmdir(d)


@unittest.skipUnless(can_mount_tmpfs(), "mounting a tmpfs needs root or CAP_SYS_ADMIN")
class FullFilesystemTest(HealthTruthBase):

    def mount(self, size):
        d = tempfile.mkdtemp(prefix="ana-full-")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", d], check=True)
        self.addCleanup(os.rmdir, d)
        self.addCleanup(subprocess.run, ["umount", "-l", d], check=False)
        return d

    def fill(self, d):
        """Writes a file until the filesystem has no block left."""
        with open(os.path.join(d, "filler"), "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        st = os.statvfs(d)
        self.assertLess(st.f_bavail * st.f_frsize, 64 * 1024)

    def start_live(self, server):
        """Starts server without waiting for readiness; returns once liveness is SERVING."""
        server.start(wait_ready=False)
        self.connect(server)
        deadline = time.monotonic() + 20
        while True:
            self.assertTrue(server.alive(), "analyticsd refused to start on a full disk:\n%s"
                            % harness.tail(server.stderr()))
            try:
                if self.check(LIVENESS) == self.hpb.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            self.assertLess(time.monotonic(), deadline, "not live within 20 s")
            time.sleep(0.1)

    def test_server_starts_on_a_full_disk_reads_work_writes_unavailable(self):
        d = self.mount("8m")
        data_dir = os.path.join(d, "data")
        os.mkdir(data_dir)
        # Some events while there is room.
        first = harness.start_server(self, env={"DATA_DIR": data_dir, "STORE_MIN_FREE_MB": 1},
                                     log_level="info")
        self.connect(first)
        self.assertIsNone(self.track(n=5, size=10, name="before-full"))
        self.assertEqual(first.stop(), 0)

        self.fill(d)
        server = harness.Server(env={"DATA_DIR": data_dir, "STORE_MIN_FREE_MB": 1},
                                log_level="info")
        self.addCleanup(server.cleanup)
        self.start_live(server)

        self.wait_status("", self.hpb.HealthCheckResponse.NOT_SERVING)
        code, data = self.rest_health(server)
        self.assertEqual(code, 503, data[:300])
        # Reads work.
        found = self.events.SearchEvents(self.pb.SearchEventsRequest(event_name="before-full"),
                                         timeout=10)
        self.assertEqual(len(found.events), 5)
        # Writes answer UNAVAILABLE, naming the cause.
        error = self.track(n=5, size=10)
        self.assertIsNotNone(error, "a write was acknowledged on a full disk")
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
        self.assertIn("disk is full", error.details())
        self.assertEqual(self.check(LIVENESS), self.hpb.HealthCheckResponse.SERVING)

        # Room again: ready again, writes work.
        os.remove(os.path.join(d, "filler"))
        self.wait_status("", self.hpb.HealthCheckResponse.SERVING, timeout=5)
        self.assertIsNone(self.track(n=5, size=10))
        self.assertEqual(server.stop(), 0)


    def test_new_data_dir_on_a_full_disk_starts_and_opens_once_there_is_room(self):
        d = self.mount("8m")
        data_dir = os.path.join(d, "data")
        os.mkdir(data_dir)
        self.fill(d)  # nothing of the database exists yet: no room for its schema
        server = harness.Server(env={"DATA_DIR": data_dir, "STORE_MIN_FREE_MB": 1},
                                log_level="info")
        self.addCleanup(server.cleanup)
        self.start_live(server)

        self.wait_status("", self.hpb.HealthCheckResponse.NOT_SERVING)
        code, data = self.rest_health(server)
        self.assertEqual(code, 503, data[:300])
        self.assertIn(b"disk is full", data)
        # Every data call answers UNAVAILABLE naming the cause, reads included.
        error = self.track(n=5, size=10)
        self.assertIsNotNone(error, "a write was acknowledged on a full disk")
        self.assertEqual(error.code(), grpc.StatusCode.UNAVAILABLE, error.details())
        self.assertIn("disk is full", error.details())
        with self.assertRaises(grpc.RpcError) as read:
            self.events.SearchEvents(self.pb.SearchEventsRequest(event_name="x"), timeout=10)
        self.assertEqual(read.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertIn("disk is full", read.exception.details())
        self.assertEqual(self.check(LIVENESS), self.hpb.HealthCheckResponse.SERVING)

        # Room again: the store is created, the server becomes ready, no restart.
        os.remove(os.path.join(d, "filler"))
        self.wait_status("", self.hpb.HealthCheckResponse.SERVING, timeout=5)
        code, data = self.rest_health(server)
        self.assertEqual(code, 200, data[:300])
        self.assertIsNone(self.track(n=5, size=10, name="after-room"))
        found = self.events.SearchEvents(self.pb.SearchEventsRequest(event_name="after-room"),
                                         timeout=10)
        self.assertEqual(len(found.events), 5)
        self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
