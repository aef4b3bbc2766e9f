"""The contracts' comments and field behavior, where tools read them:

- GET /openapi.json passes an OpenAPI 3.0 validator (@seriousme/openapi-schema-validator,
  tests/openapi/; run.sh installs it with npm ci) and carries the proto comments as
  operation, schema and property descriptions; fields marked
  `(analytics.v1.field_behavior) = REQUIRED` are in their schema's `required`, those
  marked OUTPUT_ONLY are `readOnly`;
- server reflection returns the contracts with their source info, so a reflection
  client (grpcurl describe) shows the same comments.
"""

import json
import os
import subprocess
import unittest

from google.protobuf import descriptor_pb2

import harness
import stubs
from test_ops import get

OPENAPI_DIR = os.path.join(stubs.REPO, "tests", "openapi")
TIMEOUT_S = 10


class OpenApiDocsTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        status, _, body = get(cls.rest_port, "/openapi.json")
        assert status == 200, status
        cls.raw = body
        cls.doc = json.loads(body)

    def test_openapi_validator_accepts_the_document(self):
        if not os.path.isdir(os.path.join(OPENAPI_DIR, "node_modules")):
            self.fail("run `npm ci` in tests/openapi first (tests/integration/run.sh does)")
        r = subprocess.run(["node", os.path.join(OPENAPI_DIR, "validate.mjs")], input=self.raw,
                           capture_output=True, timeout=60, cwd=OPENAPI_DIR)
        self.assertEqual(r.returncode, 0, "OpenAPI validator:\n%s%s"
                         % (r.stdout.decode()[:3000], r.stderr.decode()[:3000]))

    def test_operations_carry_the_rpc_comments(self):
        op = self.doc["paths"]["/api/events"]["post"]
        self.assertEqual(op.get("description"), "Tracks one event.")
        ws = self.doc["paths"]["/ws/analytics"]["get"]
        self.assertIn("WebSocket", ws["description"])
        self.assertNotEqual(ws["description"].split("\n")[0].strip(), "", ws["description"])

    def test_schemas_carry_message_and_field_comments(self):
        schemas = self.doc["components"]["schemas"]
        event = schemas["analytics.v1.Event"]
        self.assertEqual(event.get("description"), "One tracked event (the spec's Event Schema).")
        props = event["properties"]
        self.assertIn("UUIDv7", props["eventId"].get("description", ""))
        # A message-typed field: its $ref wrapped in allOf beside the description.
        self.assertEqual(props["timestamp"].get("description"),
                         "When the event happened (client clock).")
        self.assertIn("$ref", json.dumps(props["context"]))

    def test_error_schema_declares_every_key_of_an_error_body(self):
        status, _, body = get(self.rest_port, "/api/metrics/no-such-metric")
        self.assertEqual(status, 404, body)
        declared = self.doc["components"]["schemas"]["google.rpc.Status"]["properties"]
        for key in json.loads(body):
            self.assertIn(key, declared, "error body key %r is not in the Error schema" % key)
        self.assertIn("requestId", json.loads(body))

    def test_required_and_read_only_fields(self):
        schemas = self.doc["components"]["schemas"]
        event = schemas["analytics.v1.Event"]
        self.assertEqual(sorted(event.get("required", [])), ["eventName", "eventType"])
        self.assertTrue(event["properties"]["receivedAt"].get("readOnly"))
        self.assertFalse(event["properties"]["eventName"].get("readOnly", False))
        metric = schemas["analytics.v1.Metric"]
        self.assertEqual(sorted(metric.get("required", [])), ["formula", "name"])
        for name in ("metricId", "createdAt", "updatedAt", "resolvedNames", "warnings"):
            self.assertTrue(metric["properties"][name].get("readOnly"), name)
        alert = schemas["analytics.v1.Alert"]
        self.assertEqual(sorted(alert.get("required", [])), ["condition", "metric", "name"])
        self.assertTrue(alert["properties"]["alertId"].get("readOnly"))
        self.assertEqual(schemas["analytics.v1.Report"].get("required"), ["template"])
        self.assertTrue(schemas["analytics.v1.Report"]["properties"]["status"].get("readOnly"))
        self.assertTrue(schemas["analytics.v1.ApiKey"]["properties"]["keyId"].get("readOnly"))
        self.assertEqual(schemas["analytics.v1.CreateKeyRequest"].get("required"), ["role"])

    def test_reflection_carries_the_comments(self):
        pb2 = self.ns.reflection_v1_pb2
        stub = self.ns.reflection_v1_pb2_grpc.ServerReflectionStub(self.channel)
        req = pb2.ServerReflectionRequest(file_containing_symbol="analytics.v1.EventService")
        resp = list(stub.ServerReflectionInfo(iter([req]), timeout=TIMEOUT_S))
        files = {}
        for r in resp:
            for raw in r.file_descriptor_response.file_descriptor_proto:
                fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
                files[fdp.name] = fdp
        events = files["analytics/v1/events.proto"]
        svc = [i for i, s in enumerate(events.service) if s.name == "EventService"][0]
        meth = [i for i, m in enumerate(events.service[svc].method) if m.name == "TrackEvent"][0]
        comments = {tuple(loc.path): loc.leading_comments
                    for loc in events.source_code_info.location}
        self.assertEqual(comments.get((6, svc, 2, meth), "").strip(), "Tracks one event.")


if __name__ == "__main__":
    unittest.main()
