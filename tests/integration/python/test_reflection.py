"""grpc.reflection (v1 and v1alpha): what a reflection client such as grpcurl relies on."""

import unittest

import grpc
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool

import harness
import stubs

NOT_FOUND = 5
GOOGLE_API_HTTP = 72295728
ANALYTICS_POLICY = 51001
TIMEOUT_S = 10


class ReflectionChecks:
    """Tests shared by the v1 and v1alpha services; subclasses set VERSION."""

    VERSION = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb2 = getattr(cls.ns, "reflection_%s_pb2" % cls.VERSION)
        cls.pb2_grpc = getattr(cls.ns, "reflection_%s_pb2_grpc" % cls.VERSION)
        cls.stub = cls.pb2_grpc.ServerReflectionStub(cls.channel)

    # -- helpers -----------------------------------------------------------

    def reflect_many(self, requests):
        """Sends the requests on one stream, half-closes, returns every response."""
        reqs = [self.pb2.ServerReflectionRequest(**r) for r in requests]
        try:
            return list(self.stub.ServerReflectionInfo(iter(reqs), timeout=TIMEOUT_S))
        except grpc.RpcError as e:
            self.fail("ServerReflectionInfo(%s) failed: %s %s" % (requests, e.code(), e.details()))

    def reflect(self, **request):
        responses = self.reflect_many([request])
        self.assertGreaterEqual(len(responses), 1, "no response to %s" % request)
        return responses

    def files_of(self, responses):
        """FileDescriptorProtos of all responses, by name, in order of arrival."""
        files = {}
        for r in responses:
            kind = r.WhichOneof("message_response")
            self.assertEqual(kind, "file_descriptor_response",
                             "expected file_descriptor_response, got %s: %s" % (kind, r))
            for raw in r.file_descriptor_response.file_descriptor_proto:
                fdp = descriptor_pb2.FileDescriptorProto.FromString(raw)
                self.assertTrue(fdp.name, "a FileDescriptorProto without a name")
                files.setdefault(fdp.name, (fdp, raw))
        return files

    def pool_of(self, files):
        """A fresh pool with every file added in dependency order."""
        missing = sorted({d for fdp, _ in files.values() for d in fdp.dependency} - set(files))
        self.assertEqual(missing, [], "dependencies not sent: %s (sent: %s)"
                         % (missing, sorted(files)))
        pool = descriptor_pool.DescriptorPool()
        added = set()

        def add(name, stack=()):
            if name in added:
                return
            self.assertNotIn(name, stack, "import cycle: %s" % (stack + (name,),))
            fdp, raw = files[name]
            for dep in fdp.dependency:
                add(dep, stack + (name,))
            try:
                pool.AddSerializedFile(raw)
            except Exception as e:
                self.fail("adding %s to a fresh pool failed: %s" % (name, e))
            added.add(name)

        for name in files:
            add(name)
        return pool

    def error_of(self, responses):
        self.assertEqual(len(responses), 1, responses)
        kind = responses[0].WhichOneof("message_response")
        self.assertEqual(kind, "error_response", "expected error_response, got %s" % responses[0])
        return responses[0].error_response

    def listed_services(self):
        responses = self.reflect(list_services="*")
        self.assertEqual(len(responses), 1, responses)
        kind = responses[0].WhichOneof("message_response")
        self.assertEqual(kind, "list_services_response", responses[0])
        return [s.name for s in responses[0].list_services_response.service]

    # -- tests -------------------------------------------------------------

    def test_list_services(self):
        names = self.listed_services()
        self.assertEqual(len(names), len(set(names)), "duplicates in %s" % names)
        expected = {s.full_name for s in stubs.analytics_services()}
        expected |= {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                     "grpc.reflection.v1alpha.ServerReflection"}
        self.assertEqual(sorted(expected - set(names)), [], "missing from %s" % names)

    def test_file_containing_symbol_for_every_service(self):
        for svc in stubs.analytics_services():
            with self.subTest(service=svc.full_name):
                files = self.files_of(self.reflect(file_containing_symbol=svc.full_name))
                self.assertIn(svc.file.name, files)
                pool = self.pool_of(files)
                found = pool.FindServiceByName(svc.full_name)
                self.assertEqual([m.name for m in found.methods], [m.name for m in svc.methods])
                for want, got in zip(svc.methods, found.methods):
                    self.assertEqual(got.input_type.full_name, want.input_type.full_name)
                    self.assertEqual(got.output_type.full_name, want.output_type.full_name)
                    self.assertEqual(bool(got.client_streaming), bool(want.client_streaming))
                    self.assertEqual(bool(got.server_streaming), bool(want.server_streaming))

    def test_file_containing_symbol_for_a_method_and_a_message(self):
        for symbol in ("analytics.v1.EventService.TrackEvent", "analytics.v1.TrackEventRequest"):
            with self.subTest(symbol=symbol):
                files = self.files_of(self.reflect(file_containing_symbol=symbol))
                self.assertIn("analytics/v1/events.proto", files)

    def test_custom_method_options_survive(self):
        files = self.files_of(self.reflect(file_containing_symbol="analytics.v1.EventService"))
        self.assertIn("analytics/v1/events.proto", files)
        fdp = files["analytics/v1/events.proto"][0]
        services = {s.name: s for s in fdp.service}
        self.assertIn("EventService", services)
        got = {m.name: m.options for m in services["EventService"].method}
        policy = self.ns.options_pb2.policy
        http = self.ns.annotations_pb2.http
        gen = self.ns.analytics["events"][0].DESCRIPTOR.services_by_name["EventService"]
        for m in gen.methods:
            with self.subTest(method=m.name):
                want = m.GetOptions()
                self.assertIn(m.name, got)
                self.assertEqual(got[m.name].Extensions[policy],
                                 want.Extensions[policy])
                self.assertEqual(got[m.name].HasExtension(http), want.HasExtension(http))
                if want.HasExtension(http):
                    self.assertEqual(got[m.name].Extensions[http], want.Extensions[http])

    def test_file_by_filename(self):
        files = self.files_of(self.reflect(file_by_filename="analytics/v1/events.proto"))
        self.assertIn("analytics/v1/events.proto", files)
        pool = self.pool_of(files)
        pool.FindServiceByName("analytics.v1.EventService")

    def test_unknown_symbol_is_not_found(self):
        err = self.error_of(self.reflect(file_containing_symbol="no.such.Symbol"))
        self.assertEqual(err.error_code, NOT_FOUND, err)

    def test_unknown_filename_is_not_found(self):
        err = self.error_of(self.reflect(file_by_filename="no/such/file.proto"))
        self.assertEqual(err.error_code, NOT_FOUND, err)

    def test_all_extension_numbers_of_method_options(self):
        responses = self.reflect(all_extension_numbers_of_type="google.protobuf.MethodOptions")
        self.assertEqual(len(responses), 1, responses)
        kind = responses[0].WhichOneof("message_response")
        self.assertEqual(kind, "all_extension_numbers_response", responses[0])
        resp = responses[0].all_extension_numbers_response
        self.assertEqual(resp.base_type_name, "google.protobuf.MethodOptions")
        self.assertIn(GOOGLE_API_HTTP, resp.extension_number)
        self.assertIn(ANALYTICS_POLICY, resp.extension_number)

    def test_file_containing_extension(self):
        files = self.files_of(self.reflect(file_containing_extension=dict(
            containing_type="google.protobuf.MethodOptions", extension_number=ANALYTICS_POLICY)))
        self.assertIn("analytics/v1/options.proto", files)

    def test_several_requests_on_one_stream(self):
        responses = self.reflect_many([
            dict(list_services="*"),
            dict(file_containing_symbol="no.such.Symbol"),
            dict(file_by_filename="analytics/v1/options.proto"),
        ])
        kinds = [r.WhichOneof("message_response") for r in responses]
        self.assertEqual(kinds, ["list_services_response", "error_response",
                                 "file_descriptor_response"])

    def test_server_still_serving(self):
        self.reflect(file_containing_symbol="no.such.Symbol")
        self.assertServing()


class ReflectionV1Test(ReflectionChecks, harness.ServerTestCase):
    VERSION = "v1"


class ReflectionV1alphaTest(ReflectionChecks, harness.ServerTestCase):
    VERSION = "v1alpha"

    def test_same_answers_as_v1(self):
        v1 = self.ns.reflection_v1_pb2
        v1stub = self.ns.reflection_v1_pb2_grpc.ServerReflectionStub(self.channel)
        for req in (dict(list_services="*"),
                    dict(file_containing_symbol="analytics.v1.MetricService"),
                    dict(file_by_filename="analytics/v1/events.proto"),
                    dict(file_containing_symbol="no.such.Symbol"),
                    dict(all_extension_numbers_of_type="google.protobuf.MethodOptions")):
            with self.subTest(request=req):
                a = list(v1stub.ServerReflectionInfo(iter([v1.ServerReflectionRequest(**req)]),
                                                     timeout=TIMEOUT_S))
                b = self.reflect(**req)
                # The messages are wire-identical; compare the bytes minus the echo.
                for r in a:
                    r.ClearField("original_request")
                for r in b:
                    r.ClearField("original_request")
                self.assertEqual([r.SerializeToString(deterministic=True) for r in a],
                                 [r.SerializeToString(deterministic=True) for r in b])


if __name__ == "__main__":
    unittest.main()
