"""JWT bearer tokens against a live analyticsd, over gRPC, REST and WebSocket.

Two servers: one verifying HS256 with JWT_HS256_SECRET (plus JWT_ISSUER and
JWT_AUDIENCE), one verifying RS256 and ES256 with a JWKS file of keys this
test generates (and JWT_ALLOW_QUERY_TOKEN set). Every forged, stale or
foreign token is refused with UNAUTHENTICATED "invalid token" and nothing
more (the precise reason is in the server log only); a token naming an
account outside its accounts claim gets PERMISSION_DENIED; a valid token
works on each transport, and X-Account-Id picks one of several accounts.
"""

import json
import os
import tempfile
import time

import grpc

import authkit
from authkit import b64, bearer, claims, grpc_call, hs256, rest_call, sign, ws_call
import harness

TRACK = "/analytics.v1.EventService/TrackEvent"
NAMES = "/analytics.v1.EventService/ListEventNames"
ISSUER = "https://issuer.test"
AUDIENCE = "analytics"


class JwtCase(harness.ServerTestCase):
    """Helpers shared by both servers."""

    def track_payload(self):
        pb = self.ns.analytics["events"][0]
        return pb.TrackEventRequest(event=pb.Event(event_name="signup", event_type="user"))\
            .SerializeToString()

    def grpc_track(self, token=None, metadata=()):
        md = list(metadata)
        if token is not None:
            md.append(("authorization", "Bearer " + token))
        return grpc_call(self.channel, TRACK, self.track_payload(), md)

    def rest_track(self, token=None, headers=None, query=""):
        h = dict(headers or {})
        if token is not None:
            h.update(bearer(token))
        return rest_call(self.rest_port, "POST", "/api/events" + query, h,
                         json.dumps({"eventName": "signup", "eventType": "user"}))

    def assert_refused_everywhere(self, token, why):
        """UNAUTHENTICATED "invalid token" on gRPC, REST (401 with the RFC 6750
        header) and WebSocket (Authorization header), with no other detail."""
        code, details = self.grpc_track(token)
        self.assertEqual((code, details), ("UNAUTHENTICATED", "invalid token"), why)
        code, body, hdrs = self.rest_track(token)
        self.assertEqual(code, "UNAUTHENTICATED", why)
        self.assertEqual(json.loads(body)["message"], "invalid token", why)
        self.assertEqual(hdrs.get("www-authenticate"), 'Bearer error="invalid_token"', why)
        code, frame, _ = ws_call(self.rest_port, "/ws/analytics", headers=bearer(token))
        self.assertEqual(code, "UNAUTHENTICATED", why)
        self.assertEqual(json.loads(frame)["error"]["message"], "invalid token", why)


class Hs256Test(JwtCase):
    SERVER_ENV = {"JWT_HS256_SECRET": authkit.SECRET, "JWT_ISSUER": ISSUER,
                  "JWT_AUDIENCE": AUDIENCE, "METRICS_REQUIRE_AUTH": "true"}

    def good(self, **kw):
        kw.setdefault("iss", ISSUER)
        kw.setdefault("aud", AUDIENCE)
        return claims(**kw)

    def test_valid_token_works_on_grpc_rest_and_websocket(self):
        token = hs256(self.good())
        self.assertEqual(self.grpc_track(token)[0], "OK")
        self.assertEqual(self.rest_track(token)[0], "OK")
        code, _, _ = ws_call(self.rest_port, "/ws/analytics", headers=bearer(token))
        self.assertEqual(code, "OK")

    def test_health_stays_open_and_metrics_follow_metrics_require_auth(self):
        code, body, _ = rest_call(self.rest_port, "GET", "/health")
        self.assertEqual(code, "OK")
        self.assertEqual(json.loads(body)["auth"], "required")
        self.assertEqual(rest_call(self.rest_port, "GET", "/metrics")[0], "UNAUTHENTICATED")
        self.assertEqual(rest_call(self.rest_port, "GET", "/metrics",
                                   bearer(hs256(self.good())))[0], "OK")
        self.assertEqual(rest_call(self.rest_port, "GET", "/metrics",
                                   bearer(hs256(self.good(ttl=-3600))))[0], "UNAUTHENTICATED")

    def test_no_credentials_are_refused_even_on_loopback(self):
        code, details = self.grpc_track()
        self.assertEqual(code, "UNAUTHENTICATED")
        self.assertIn("Authorization: Bearer", details)
        code, _, hdrs = self.rest_track()
        self.assertEqual(code, "UNAUTHENTICATED")
        self.assertTrue(hdrs.get("www-authenticate", "").startswith("Bearer"))
        self.assertEqual(ws_call(self.rest_port, "/ws/analytics")[0], "UNAUTHENTICATED")

    def test_alg_none_is_refused(self):
        self.assert_refused_everywhere(sign({"alg": "none", "typ": "JWT"}, self.good()), "none")
        self.assert_refused_everywhere(sign({"alg": "None"}, self.good()), "None")

    def test_expired_and_not_yet_valid_are_refused(self):
        self.assert_refused_everywhere(hs256(self.good(ttl=-3600)), "expired")
        self.assert_refused_everywhere(hs256(self.good(nbf=int(time.time()) + 3600)), "nbf")
        self.assert_refused_everywhere(hs256(self.good(iat=int(time.time()) + 3600)), "iat")

    def test_wrong_issuer_and_audience_are_refused(self):
        self.assert_refused_everywhere(hs256(self.good(iss="https://evil.test")), "iss")
        self.assert_refused_everywhere(hs256(self.good(aud="someone-else")), "aud")
        no_iss = self.good()
        del no_iss["iss"]
        self.assert_refused_everywhere(hs256(no_iss), "no iss")

    def test_wrong_secret_stripped_signature_and_bad_base64_are_refused(self):
        self.assert_refused_everywhere(hs256(self.good(), secret=b"x" * 40), "other secret")
        good = hs256(self.good())
        self.assert_refused_everywhere(good.rsplit(".", 1)[0] + ".", "stripped signature")
        self.assert_refused_everywhere(good.rsplit(".", 1)[0], "two parts")
        self.assert_refused_everywhere(good[:-4] + "@@@@", "bad base64")
        self.assert_refused_everywhere("not-a-jwt", "garbage")

    def test_a_tampered_payload_is_refused(self):
        h, p, s = hs256(self.good(account="acme", roles=["viewer"])).split(".")
        forged = b64(json.dumps(self.good(account="acme", roles=["admin"])))
        self.assert_refused_everywhere("%s.%s.%s" % (h, forged, s), "payload swapped")

    def test_oversized_token_is_refused(self):
        big = hs256(self.good(pad="x" * 9000))
        code, details = self.grpc_track(big)
        self.assertEqual((code, details), ("UNAUTHENTICATED", "invalid token"))
        code, body, _ = self.rest_track(big)
        self.assertEqual(code, "UNAUTHENTICATED")
        self.assertEqual(json.loads(body)["message"], "invalid token")

    def test_token_without_an_account_is_refused(self):
        self.assert_refused_everywhere(hs256(self.good(account=None)), "no account claim")

    def test_account_selection_with_x_account_id(self):
        token = hs256(self.good(account=None, accounts={"acme": "admin", "globex": "viewer"}))
        # Several accounts and none named: INVALID_ARGUMENT listing them.
        code, details = self.grpc_track(token)
        self.assertEqual(code, "INVALID_ARGUMENT")
        self.assertIn("acme", details)
        self.assertIn("globex", details)
        # Named: acme (admin) may write, globex (viewer) may not.
        self.assertEqual(self.grpc_track(token, [("x-account-id", "acme")])[0], "OK")
        self.assertEqual(self.grpc_track(token, [("x-account-id", "globex")])[0],
                         "PERMISSION_DENIED")
        self.assertEqual(self.rest_track(token, {"X-Account-Id": "acme"})[0], "OK")
        self.assertEqual(self.rest_track(token, {"X-Account-Id": "globex"})[0],
                         "PERMISSION_DENIED")

    def test_an_account_not_in_the_claim_is_permission_denied(self):
        token = hs256(self.good(account=None, accounts={"acme": "admin", "globex": "admin"}))
        code, details = self.grpc_track(token, [("x-account-id", "initech")])
        self.assertEqual(code, "PERMISSION_DENIED")
        self.assertNotIn("acme", details)
        self.assertEqual(self.rest_track(token, {"X-Account-Id": "initech"})[0],
                         "PERMISSION_DENIED")

    def test_query_token_is_not_accepted_unless_enabled(self):
        token = hs256(self.good())
        code, _, _ = self.rest_track(query="?access_token=" + token)
        self.assertEqual(code, "UNAUTHENTICATED")

    def test_websocket_bearer_subprotocol_selects_bearer_without_echoing_the_token(self):
        # A short token: it is read, refused (it is not a valid token) and never echoed back.
        code, frame, selected = ws_call(self.rest_port, "/ws/analytics",
                                        subprotocols=["bearer", "a.b.c"])
        self.assertEqual(selected, "bearer")
        self.assertEqual(code, "UNAUTHENTICATED")
        self.assertNotIn("a.b.c", frame)
        # A real token makes the list longer than lws 4.1 takes (126 bytes):
        # still read whole, and "bearer" alone selected.
        token = hs256(self.good())
        self.assertGreater(len("bearer, " + token), 126)
        code, frame, selected = ws_call(self.rest_port, "/ws/analytics",
                                        subprotocols=["bearer", token])
        self.assertEqual((code, selected), ("OK", "bearer"), frame)

    def test_refusal_reasons_are_logged_not_answered(self):
        time.sleep(1.1)  # the refusal line is rate-limited per second: a fresh second
        mark = self.server.log_mark()
        self.grpc_track(hs256(self.good(ttl=-3600)))
        time.sleep(0.2)
        lines = [l.get("msg", "") for l in self.server.log_lines(mark)]
        self.assertTrue(any("expired" in m for m in lines), lines)
        self.assertFalse(any(authkit.SECRET in json.dumps(l) for l in lines))


class JwksTest(JwtCase):
    """RS256 and ES256 from a JWKS file; the attacks that need public keys."""

    @classmethod
    def setUpClass(cls):
        cls.rsa = authkit.rsa_key()
        cls.ec = authkit.ec_key()
        cls.tmp = tempfile.mkdtemp(prefix="ana-jwks-")
        path = os.path.join(cls.tmp, "jwks.json")
        with open(path, "w") as f:
            json.dump({"keys": [authkit.jwk(cls.rsa, "rsa-1"), authkit.jwk(cls.ec, "ec-1")]}, f)
        cls.SERVER_ENV = {"JWT_JWKS_FILE": path, "JWT_ALLOW_QUERY_TOKEN": "true"}
        super().setUpClass()

    def rs256(self, payload, kid="rsa-1", extra_header=None):
        header = {"alg": "RS256", "typ": "JWT", "kid": kid}
        header.update(extra_header or {})
        return sign(header, payload, key=self.rsa)

    def es256(self, payload, kid="ec-1"):
        return sign({"alg": "ES256", "kid": kid}, payload, key=self.ec)

    def test_rs256_and_es256_work_on_every_transport(self):
        for token in (self.rs256(claims()), self.es256(claims())):
            self.assertEqual(self.grpc_track(token)[0], "OK")
            self.assertEqual(self.rest_track(token)[0], "OK")
            self.assertEqual(ws_call(self.rest_port, "/ws/analytics",
                                     headers=bearer(token))[0], "OK")

    def test_hs256_signed_with_the_rsa_public_key_is_refused(self):
        # Algorithm confusion: the public key used as an HMAC secret.
        pem = authkit.public_pem(self.rsa)
        token = sign({"alg": "HS256", "kid": "rsa-1"}, claims(), secret=pem)
        self.assert_refused_everywhere(token, "alg confusion")

    def test_unknown_kid_is_refused(self):
        self.assert_refused_everywhere(self.rs256(claims(), kid="nobody"), "unknown kid")
        # The right key under the other key's kid.
        self.assert_refused_everywhere(self.rs256(claims(), kid="ec-1"), "kid of another alg")

    def test_a_key_brought_in_the_header_is_refused(self):
        attacker = authkit.rsa_key()
        own_jwk = authkit.jwk(attacker, "rsa-1")
        forged = sign({"alg": "RS256", "kid": "rsa-1", "jwk": own_jwk}, claims(), key=attacker)
        self.assert_refused_everywhere(forged, "jwk header")
        for member in ("jku", "x5u"):
            token = self.rs256(claims(), extra_header={member: "https://evil.test/jwks.json"})
            self.assert_refused_everywhere(token, member)

    def test_another_key_with_a_known_kid_is_refused(self):
        attacker = authkit.rsa_key()
        self.assert_refused_everywhere(
            sign({"alg": "RS256", "kid": "rsa-1"}, claims(), key=attacker), "other key")

    def test_query_token_when_enabled_and_never_logged(self):
        token = self.rs256(claims())
        mark = self.server.log_mark()
        code, body, _ = self.rest_track(query="?access_token=" + token)
        self.assertEqual(code, "OK", body)
        code, _, _ = ws_call(self.rest_port, "/ws/analytics?access_token=" + token)
        self.assertEqual(code, "OK")
        bad = token[:-6] + "AAAAAA"
        self.assertEqual(self.rest_track(query="?access_token=" + bad)[0], "UNAUTHENTICATED")
        time.sleep(0.2)
        text = "\n".join(self.server.raw_log_lines(mark))
        self.assertNotIn(token.split(".")[2], text)
        self.assertNotIn(bad.split(".")[2], text)
