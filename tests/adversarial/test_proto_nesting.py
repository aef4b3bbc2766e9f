"""Issue 14, point 1: Protobuf nested 5,000 messages deep overflowed the stack
inside protobuf-c's recursive unpack (SIGSEGV, everything down). Every request
is now walked against its descriptor first; nesting deeper than
PROTO_MAX_DEPTH (100) answers INVALID_ARGUMENT naming the field."""

import grpc

import adversary
from protowire import deep_value, event, field, status_details, struct_of, unary_raw

LEVELS = 5000
LIMIT_TEXT = "more than 100 levels deep"


class ProtoNesting(adversary.AttackTestCase):

    def attack(self, method, body, path_prefix):
        with self.rss_watch():
            with self.assertRaises(grpc.RpcError) as cm:
                unary_raw(self.channel, method, body)
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT, err.details())
        self.assertIn(LIMIT_TEXT, err.details())
        self.assertTrue(err.details().startswith(path_prefix), err.details())
        self.assertIn(path_prefix.encode(), status_details(err))
        self.assert_survived()

    def test_track_event_with_value_5000_deep_crashed_the_server(self):
        body = field(1, event(properties=struct_of(("a", deep_value(LEVELS)))))
        self.assertGreater(len(body), 30000)
        self.attack("/analytics.v1.EventService/TrackEvent", body,
                    'event.properties.fields["a"].listValue.values[0].listValue')

    def test_create_metric_with_filter_value_5000_deep_crashed_the_server(self):
        metric = (field(3, "deep") + field(4, "counter") + field(7, "sum") +
                  field(8, field(1, "properties.a") + field(2, "eq") +
                        field(3, deep_value(LEVELS))))
        self.attack("/analytics.v1.MetricService/CreateMetric", field(1, metric),
                    "metric.filters[0].value.listValue.values[0]")

    def test_generate_report_with_parameters_5000_deep_crashed_the_server(self):
        report = field(3, "deep") + field(6, struct_of(("p", deep_value(LEVELS))))
        self.attack("/analytics.v1.ReportService/GenerateReport", field(1, report),
                    'report.parameters.fields["p"].listValue')

    def test_ingest_stream_message_5000_deep_crashed_the_server(self):
        msg = field(2, event(properties=struct_of(("a", deep_value(LEVELS)))))
        call = self.channel.stream_stream("/analytics.v1.EventService/IngestEvents",
                                          request_serializer=None, response_deserializer=None)
        with self.rss_watch():
            with self.assertRaises(grpc.RpcError) as cm:
                list(call(iter([msg]), timeout=10))
        err = cm.exception
        self.assertEqual(err.code(), grpc.StatusCode.INVALID_ARGUMENT, err.details())
        self.assertIn(LIMIT_TEXT, err.details())
        self.assertIn('events[0].properties.fields["a"]', err.details())
        self.assert_survived()


def http_json(port, method, path, body=None):
    import http.client
    import json
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class RemoteBridgeReplyDepth(adversary.AttackTestCase):
    """The remote bridge decoded analyticsd's replies with the built-in limit
    of 100 whatever PROTO_MAX_DEPTH said: its own configuration must reach
    its reply decoding (here a limit of 4, below a search result's nesting:
    response, event, properties, entry, value, struct...)."""

    def test_remote_bridge_ignored_proto_max_depth_for_replies(self):
        import harness
        nested = {"b": {"c": {"d": 1}}}
        status, body = http_json(self.server.http_port, "POST", "/api/events",
                                 {"eventType": "track", "eventName": "deep-reply",
                                  "properties": {"a": nested}})
        self.assertEqual(status, 200, body)
        path = "/api/events/search?eventName=deep-reply"
        status, body = http_json(self.server.http_port, "GET", path)
        self.assertEqual(status, 200, body)
        self.assertIn(b'"d":1', body.replace(b" ", b""))

        bridge = harness.RemoteBridge(self.server, env={"PROTO_MAX_DEPTH": 4}).start()
        self.addCleanup(bridge.stop)
        status, body = http_json(bridge.port, "GET", path)
        self.assertEqual(status, 500, body)
        self.assertIn(b"malformed response", body)
        # The same bridge at the default limit passes the reply on.
        bridge.stop()
        bridge = harness.RemoteBridge(self.server).start()
        self.addCleanup(bridge.stop)
        status, body = http_json(bridge.port, "GET", path)
        self.assertEqual(status, 200, body)
        self.assertIn(b'"d":1', body.replace(b" ", b""))
        self.assert_survived()
