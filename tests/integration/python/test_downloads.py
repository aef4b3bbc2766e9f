"""Report downloads as HTTP download routes, in both bridge modes.

DownloadReport is a server-streaming RPC of analytics.v1.FileChunk, which
the generator marks as a download route: plain HTTP (not a WebSocket), an
application/octet-stream answer in OpenAPI with 206/304/409/416. A report
id that does not exist answers NOT_FOUND: over REST a JSON error with 404
through the download path, in-process and through analytics-restbridge.

The bytes themselves through the remote bridge: analytics-restbridge in
front of tests/integration/test_rpc_runtime --serve, a gRPC server whose
DownloadReport sends a 3 MiB file with the file stream helper: the whole
file, ETag and 304, the three Range forms (206), 416, several ranges (200),
and a reader that stops while the bridge's queued bytes stay bounded. (The
in-process bridge has the same checks in tests/integration/test_restbridge.c.)
"""

import http.client
import json
import os
import socket
import subprocess
import tempfile
import time
import re

import unittest

import harness

TIMEOUT_S = 10


def get(port, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class DownloadRouteTest(harness.ServerTestCase):
    def test_download_is_plain_http_not_a_websocket(self):
        status, h, body = get(self.rest_port, "/api/reports/r1/download?runId=x",
                              {"Range": "bytes=0-9", "If-None-Match": '"e"'})
        self.assertEqual(status, 404, body)
        self.assertEqual(h.get("content-type"), "application/json")
        err = json.loads(body)
        self.assertEqual(err["code"], 5)
        self.assertNotIn("WebSocket", err["message"])

    def test_openapi_documents_a_file_answer(self):
        status, _, body = get(self.rest_port, "/openapi.json")
        self.assertEqual(status, 200)
        op = json.loads(body)["paths"]["/api/reports/{report_id}/download"]["get"]
        responses = op["responses"]
        self.assertIn("application/octet-stream", responses["200"]["content"])
        for code in ("206", "304", "409", "416"):
            self.assertIn(code, responses)
        names = {p["name"] for p in op["parameters"]}
        self.assertIn("Range", names)
        self.assertIn("runId", names)
        self.assertNotIn("offset", names)


class DownloadRouteRemoteTest(DownloadRouteTest):
    BRIDGE = "remote"


def rpc_test_binary():
    build = os.path.dirname(os.path.dirname(os.path.abspath(harness.binary_path())))
    return os.path.join(build, "tests", "integration", "test_rpc_runtime")


def file_byte(i):
    return (i * 13 + i // 509) & 0xFF


class Upstream:
    """test_rpc_runtime --serve, standing in for analyticsd as RemoteBridge's server."""

    def __init__(self):
        self.proc = subprocess.Popen([rpc_test_binary(), "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.proc.stdout.readline().decode().split()
        if len(line) != 4 or line[0] != "PORT":
            self.proc.kill()
            raise harness.ServerError("test_rpc_runtime --serve said %r" % line)
        self.target = "127.0.0.1:%s" % line[1]
        with open(line[3], "rb") as f:
            self.data = f.read()
        self.workdir = tempfile.mkdtemp(prefix="ana-dl-")
        self.grace_ms = 1000

    def stop(self):
        if self.proc.stdin:
            self.proc.stdin.close()
            self.proc.stdin = None
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@unittest.skipUnless(os.access(rpc_test_binary(), os.X_OK), "test_rpc_runtime is not built")
class RemoteDownloadBytesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.upstream = Upstream()
        try:
            cls.bridge = harness.RemoteBridge(cls.upstream, {"LOG_LEVEL": "warn"}).start()
        except Exception:
            cls.upstream.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.bridge.stop()
        cls.upstream.stop()

    def get(self, headers=None):
        return get(self.bridge.port, "/api/reports/r1/download", headers)

    def test_whole_file_with_headers(self):
        status, h, body = self.get()
        self.assertEqual(status, 200)
        self.assertEqual(body, self.upstream.data)
        self.assertEqual(h["content-type"], "application/pdf")
        self.assertEqual(int(h["content-length"]), len(self.upstream.data))
        self.assertEqual(h["etag"], '"e1"')
        self.assertEqual(h["content-disposition"], 'attachment; filename="campaign.pdf"')

    def test_if_none_match_304(self):
        status, h, body = self.get({"If-None-Match": '"e1"'})
        self.assertEqual((status, body), (304, b""))
        self.assertEqual(h["etag"], '"e1"')

    def test_ranges(self):
        data, n = self.upstream.data, len(self.upstream.data)
        for rng, start, end in (("bytes=100-199", 100, 199), ("bytes=%d-" % (n - 7), n - 7, n - 1),
                                ("bytes=-10", n - 10, n - 1)):
            status, h, body = self.get({"Range": rng})
            self.assertEqual(status, 206, rng)
            self.assertEqual(h["content-range"], "bytes %d-%d/%d" % (start, end, n))
            self.assertEqual(body, data[start:end + 1], rng)
        status, h, body = self.get({"Range": "bytes=%d-" % n})
        self.assertEqual(status, 416)
        self.assertEqual(h["content-range"], "bytes */%d" % n)
        self.assertEqual(json.loads(body)["code"], 11)
        status, h, body = self.get({"Range": "bytes=0-1,4-5"})
        self.assertEqual(status, 200)
        self.assertEqual(body, data)

    def queued(self):
        _, _, body = get(self.bridge.port, "/metrics")
        m = re.search(rb"^ana_websocket_queue_budget_used_bytes (\d+)$", body, re.M)
        return int(m.group(1))

    def test_stopped_reader_keeps_memory_bounded(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.connect(("127.0.0.1", self.bridge.port))
        s.sendall(b"GET /api/reports/r1/download HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = s.recv(4096)
        most = 0
        for _ in range(8):
            time.sleep(0.05)
            most = max(most, self.queued())
        self.assertLessEqual(most, 256 * 1024 + 64 * 1024)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
            head, _, body = got.partition(b"\r\n\r\n")
            if len(body) >= len(self.upstream.data):
                break
        s.close()
        self.assertEqual(body, self.upstream.data)


if __name__ == "__main__":
    unittest.main()
