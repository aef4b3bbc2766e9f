"""Report downloads as HTTP download routes, in both bridge modes.

DownloadReport is a server-streaming RPC of analytics.v1.FileChunk, which
the generator marks as a download route: plain HTTP (not a WebSocket), an
application/octet-stream answer in OpenAPI with 206/304/409/416. analyticsd
has no report runs yet, so its DownloadReport answers UNIMPLEMENTED: over
REST that must arrive as a JSON error with 501 through the download path,
in-process and through analytics-restbridge (the bytes themselves, Range
and ETag are covered in-process by tests/integration/test_restbridge.c).
"""

import http.client
import json

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
        self.assertEqual(status, 501, body)
        self.assertEqual(h.get("content-type"), "application/json")
        err = json.loads(body)
        self.assertEqual(err["code"], 12)
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


if __name__ == "__main__":
    unittest.main()
