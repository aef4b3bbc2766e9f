"""The cross-tenant matrix: every RPC of the contracts, over gRPC, its REST
route and (for streams) its WebSocket, under each kind of caller that must
not reach tenant A's data.

Methods and routes are enumerated from the generated descriptors (the
google.api.http and analytics.v1.policy options), so an RPC added later is
covered without touching this file. Against a server verifying HS256 tokens,
tenant A (admin) first plants a marker in its events and metrics; then for
every method and transport:
  no credentials         -> UNAUTHENTICATED (admission runs before the
                            handler, so unimplemented methods answer it too)
  a bad token            -> UNAUTHENTICATED
  another account's token naming A in X-Account-Id -> PERMISSION_DENIED
  A's token with a role lacking the method's permission -> PERMISSION_DENIED
  B's admin token with A's object ids -> NOT_FOUND (or UNIMPLEMENTED), never
                            PERMISSION_DENIED, which would confirm the id
and the same with API keys (X-Api-Key) in place of tokens: a bad key ->
UNAUTHENTICATED, B's admin key naming A -> PERMISSION_DENIED, A's key with a
role lacking the permission -> PERMISSION_DENIED, B's admin key with A's ids
-> NOT_FOUND; no response body ever carries A's marker.
"""

import json
import re
import uuid

import grpc

import authkit
from authkit import bearer, claims, fill_template, grpc_call, hs256, rest_call, ws_call
import harness
import stubs

A, B = "tenant-a", "tenant-b"
MARKER = "tenant_a_secret_" + uuid.uuid4().hex[:12]


def message_class(desc):
    from google.protobuf import message_factory
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory().GetPrototype(desc)


class TenancyMatrixTest(harness.ServerTestCase):
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.methods = stubs.analytics_methods()
        cls.routes = authkit.routes()
        cls.token_a = hs256(claims(account=A, roles=["admin"]))
        cls.token_b = hs256(claims(account=B, roles=["admin"]))
        cls.ids = cls.plant()
        cls.key_b = cls.create_key(cls.token_b, "admin")
        cls.keys_a = {r: cls.create_key(cls.token_a, r) for r in ("viewer", "ingest")}

    @classmethod
    def create_key(cls, token, role):
        code, text, _ = rest_call(cls.rest_port, "POST", "/api/keys", bearer(token),
                                  json.dumps({"role": role}))
        if code != "OK":
            raise AssertionError("CreateKey %s: %s %s" % (role, code, text))
        return json.loads(text)["apiKey"]

    @classmethod
    def plant(cls):
        """Tenant A's data, with MARKER in it; returns {field name: A's id}."""
        md = [("authorization", "Bearer " + cls.token_a)]
        epb, egrpc = cls.ns.analytics["events"]
        ev = epb.Event(event_name=MARKER, event_type="user")
        ev.properties.update({"note": MARKER})
        r = egrpc.EventServiceStub(cls.channel).TrackEvent(epb.TrackEventRequest(event=ev),
                                                           timeout=10, metadata=md)
        ids = {"event_id": r.result.event_id}
        mpb, mgrpc = cls.ns.analytics["metrics"]
        try:
            m = mgrpc.MetricServiceStub(cls.channel).CreateMetric(
                mpb.CreateMetricRequest(metric=mpb.Metric(name=MARKER, formula="count(%s)"
                                                          % MARKER)),
                timeout=10, metadata=md)
            ids["metric_id"] = m.metric_id
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        return ids

    def request_with_ids(self, m, ids):
        """The method's request with every top-level *_id string set to A's id;
        addressed is whether one of them names the object the method acts on
        (a path variable of its route, as the contracts address objects)."""
        cls = message_class(m.descriptor.input_type)
        msg = cls()
        route = self.routes.get(m.path)
        path_vars = set(re.findall(r"\{([^}=]*)", route[1])) if route else set()
        addressed = False
        for f in m.descriptor.input_type.fields:
            if f.name.endswith("_id") and f.type == f.TYPE_STRING and f.label != f.LABEL_REPEATED:
                setattr(msg, f.name, ids.get(f.name, next(iter(ids.values()))))
                addressed = addressed or f.name in path_vars
        return msg.SerializeToString(), addressed

    def weaker_role(self, permission):
        return "viewer" if permission == "events:write" else "ingest"

    def scenarios(self, m):
        """(name, headers dict, expected status set) for each caller."""
        perm = authkit.permission_of(m)
        out = [
            ("no credentials", {}, {"UNAUTHENTICATED"}),
            ("bad token", bearer("eyJhbGciOiJIUzI1NiJ9.e30.bm9wZQ"), {"UNAUTHENTICATED"}),
            ("another account's token",
             dict(bearer(hs256(claims(account=None, accounts={B: "admin"}))),
                  **{"X-Account-Id": A}), {"PERMISSION_DENIED"}),
        ]
        out += [
            ("bad API key", {"X-Api-Key": "ana_" + "A" * 12 + "_" + "A" * 43},
             {"UNAUTHENTICATED"}),
            ("another account's API key", {"X-Api-Key": self.key_b, "X-Account-Id": A},
             {"PERMISSION_DENIED"}),
        ]
        if perm:
            out.append(("role without %s" % perm,
                        bearer(hs256(claims(account=A, roles=[self.weaker_role(perm)]))),
                        {"PERMISSION_DENIED"}))
            out.append(("API key role without %s" % perm,
                        {"X-Api-Key": self.keys_a[self.weaker_role(perm)]},
                        {"PERMISSION_DENIED"}))
        return out

    def assert_no_marker(self, where, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.assertNotIn(MARKER, text or "", "%s leaked tenant A's data" % where)

    def call_grpc(self, m, headers, payload=b""):
        md = [(k.lower(), v) for k, v in headers.items()]
        return grpc_call(self.channel, m.path, payload, md, server_streaming=m.server_streaming,
                         client_streaming=m.client_streaming)

    def call_rest(self, m, headers, fill="x"):
        verb, template, body = self.routes[m.path]
        path = fill_template(template, fill)
        if template.startswith("/ws/"):
            code, frame, _ = ws_call(self.rest_port, path, headers=headers)
            return code, frame
        code, text, _ = rest_call(self.rest_port, verb, path, headers,
                                  "{}" if body else None)
        return code, text

    def test_methods_and_routes_are_enumerated(self):
        self.assertGreaterEqual(len(self.methods), 20)
        self.assertIn("/analytics.v1.EventService/TrackEvent", self.routes)
        self.assertTrue(any(t.startswith("/ws/") for _, t, _ in self.routes.values()))

    def test_every_method_refuses_callers_outside_the_tenant(self):
        for m in self.methods:
            for name, headers, expected in self.scenarios(m):
                with self.subTest(method=m.path, caller=name, transport="grpc"):
                    code, details = self.call_grpc(m, headers)
                    self.assertIn(code, expected, "%s: %r" % (m.path, details))
                    self.assert_no_marker(m.path, details)
                if m.path in self.routes:
                    with self.subTest(method=m.path, caller=name, transport="rest/ws"):
                        code, text = self.call_rest(m, headers)
                        self.assertIn(code, expected, "%s: %r" % (m.path, text))
                        self.assert_no_marker(m.path, text)

    def test_another_accounts_object_ids_are_not_found(self):
        for cred, md in (("token", bearer(self.token_b)), ("API key", {"X-Api-Key": self.key_b})):
            for m in self.methods:
                payload, filled = self.request_with_ids(m, self.ids)
                with self.subTest(method=m.path, transport="grpc", credential=cred):
                    code, out = self.call_grpc(m, md, payload)
                    self.assert_no_marker(m.path, out)
                    if filled:
                        self.assertIn(code, {"NOT_FOUND", "UNIMPLEMENTED", "INVALID_ARGUMENT"},
                                      "%s with A's id answered %s %r" % (m.path, code, out))
                route = self.routes.get(m.path)
                if route and "{" in route[1]:
                    with self.subTest(method=m.path, transport="rest/ws", credential=cred):
                        field = route[1][route[1].index("{") + 1:route[1].index("}")]
                        the_id = self.ids.get(field, next(iter(self.ids.values())))
                        code, text = self.call_rest(m, md, fill=the_id)
                        self.assert_no_marker(m.path, text)
                        self.assertIn(code, {"NOT_FOUND", "UNIMPLEMENTED", "INVALID_ARGUMENT"},
                                      "%s with A's id answered %s %r" % (m.path, code, text))

    def test_another_account_lists_nothing_of_a(self):
        # Every method B may call without ids (lists, searches, streams): B's
        # own view, never A's marker.
        for cred, md in (("token", bearer(self.token_b)), ("API key", {"X-Api-Key": self.key_b})):
            for m in self.methods:
                if m.path in self.routes:
                    with self.subTest(method=m.path, credential=cred):
                        code, text = self.call_rest(m, md)
                        self.assert_no_marker(m.path, text)

    def test_tenant_a_sees_its_own_data(self):
        # The control: the marker is findable by its owner, so its absence
        # above means something.
        code, text, _ = rest_call(self.rest_port, "GET", "/api/events/names",
                                  bearer(self.token_a))
        self.assertEqual(code, "OK", text)
        names = json.dumps(json.loads(text))
        self.assertIn(MARKER, names)
