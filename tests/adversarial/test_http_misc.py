"""Issue 14, point 9 (HTTP): CONNECT and unknown methods get an answer."""

from adversary import AttackTestCase, raw_http, status_codes


class HttpMiscTest(AttackTestCase):

    def test_connect_gets_an_answer(self):
        with self.rss_watch():
            data = raw_http(self.rest_port, "CONNECT example.com:443 HTTP/1.1\r\n"
                            "Host: example.com:443\r\n\r\n", read_timeout=3, until_close=True)
        self.assertIn(status_codes(data)[:1], ([405], [501]), data[:300])
        self.assert_survived()

    def test_empty_query_segments_are_not_a_parameter(self):
        # lws fills an empty last query segment with "/", which was read as
        # a parameter named "/" (400 unknown query parameter).
        with self.rss_watch():
            for target in ("/api/metrics?&&&", "/api/metrics?&", "/api/events/search?&&&"):
                data = raw_http(self.rest_port, "GET %s HTTP/1.1\r\nHost: localhost\r\n"
                                "Connection: close\r\n\r\n" % target, until_close=True)
                self.assertEqual(status_codes(data)[:1], [200], (target, data[-300:]))
            data = raw_http(self.rest_port, "GET /api/metrics?bogus=1&& HTTP/1.1\r\n"
                            "Host: localhost\r\nConnection: close\r\n\r\n", until_close=True)
            self.assertEqual(status_codes(data)[:1], [400], data[-300:])
            self.assertIn(b'"bogus"', data)
        self.assert_survived()
