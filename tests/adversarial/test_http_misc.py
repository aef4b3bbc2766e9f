"""Issue 14, point 9 (HTTP): CONNECT and unknown methods get an answer."""

from adversary import AttackTestCase, raw_http, status_codes


class HttpMiscTest(AttackTestCase):

    def test_connect_gets_an_answer(self):
        with self.rss_watch():
            data = raw_http(self.rest_port, "CONNECT example.com:443 HTTP/1.1\r\n"
                            "Host: example.com:443\r\n\r\n", read_timeout=3, until_close=True)
        self.assertIn(status_codes(data)[:1], ([405], [501]), data[:300])
        self.assert_survived()
