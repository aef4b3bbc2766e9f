"""API keys managed over gRPC and REST (KeyService, /api/keys) and offline
(`analyticsd keys create|list|revoke` on the running server's DATA_DIR): the
key is shown once and never again, only its SHA-256 is stored, revocation is
recorded, another account's key is NOT_FOUND and a bad role is
INVALID_ARGUMENT naming `role`. The first key ends protected mode, so every
call here carries an admin JWT of the account (test_api_key_auth.py covers
keys as credentials)."""

import glob
import os
import re
import subprocess

import grpc

import authkit
import harness
from test_rest import RestClient

TIMEOUT_S = 10
ACCOUNT = "acme-keys"
KEY_RE = re.compile(r"^ana_([0-9A-Za-z]{12})_[0-9A-Za-z]{43}$")


class _Credentials(grpc.UnaryUnaryClientInterceptor):
    """Adds the authorization metadata to every unary call."""

    def __init__(self, value):
        self.value = value

    def intercept_unary_unary(self, continuation, details, request):
        md = list(details.metadata or []) + [("authorization", self.value)]
        details = details._replace(metadata=md) if hasattr(details, "_replace") else \
            _Details(details.method, details.timeout, md, details.credentials,
                     details.wait_for_ready, details.compression)
        return continuation(details, request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = (credentials, wait_for_ready,
                                                                   compression)


class _AuthedRest(RestClient):
    def __init__(self, port, value):
        super().__init__(port)
        self.value = value

    def request(self, verb, path, body=None, headers=None, raw_body=None):
        return super().request(verb, path, body, dict(headers or {}, Authorization=self.value),
                               raw_body)


class ApiKeysTest(harness.ServerTestCase):

    SERVER_ENV = {"DEFAULT_ACCOUNT_ID": ACCOUNT, "JWT_HS256_SECRET": authkit.SECRET}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        bearer = "Bearer " + authkit.hs256(authkit.claims(account=ACCOUNT, roles=["admin"],
                                                          ttl=3600))
        cls.pb, kgrpc = cls.ns.analytics["keys"]
        cls.keys = kgrpc.KeyServiceStub(grpc.intercept_channel(cls.channel,
                                                               _Credentials(bearer)))
        cls.rest = _AuthedRest(cls.rest_port, bearer)

    def offline(self, *args, check=True):
        """Runs `analyticsd keys ARGS` on the server's DATA_DIR."""
        env = harness.base_env({"DATA_DIR": self.server.data_dir})
        p = subprocess.run([self.server.binary, "keys"] + list(args), env=env,
                           capture_output=True, text=True, timeout=TIMEOUT_S)
        if check:
            self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def stored_bytes(self):
        data = b""
        for path in glob.glob(os.path.join(self.server.data_dir, "*")):
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    data += f.read()
        return data

    def assertNoSecret(self, obj, key):
        text = repr(obj)
        self.assertNotIn(key, text)
        self.assertNotIn(key.split("_")[2], text)

    def test_grpc_create_shows_the_key_once(self):
        resp = self.keys.CreateKey(self.pb.CreateKeyRequest(name="tracker", role="ingest"),
                                   timeout=TIMEOUT_S)
        m = KEY_RE.match(resp.api_key)
        self.assertIsNotNone(m, resp.api_key)
        key_id = m.group(1)
        self.assertEqual(resp.key.key_id, key_id)
        self.assertEqual(resp.key.account_id, ACCOUNT)
        self.assertEqual(resp.key.role, "ingest")
        self.assertEqual(resp.key.name, "tracker")
        self.assertTrue(resp.key.HasField("created_at"))
        self.assertFalse(resp.key.HasField("revoked_at"))
        self.assertFalse(resp.key.HasField("last_used_at"))

        got = self.keys.GetKey(self.pb.GetKeyRequest(key_id=key_id), timeout=TIMEOUT_S)
        self.assertEqual(got, resp.key)
        self.assertNoSecret(got, resp.api_key)
        listed = self.keys.ListKeys(self.pb.ListKeysRequest(page_size=1000), timeout=TIMEOUT_S)
        self.assertIn(key_id, [k.key_id for k in listed.keys])
        self.assertNoSecret(listed, resp.api_key)
        # Only the SHA-256 reaches the disk.
        stored = self.stored_bytes()
        self.assertIn(key_id.encode(), stored)
        self.assertNotIn(resp.api_key.split("_")[2].encode(), stored)

    def test_grpc_revoke_records_the_time(self):
        resp = self.keys.CreateKey(self.pb.CreateKeyRequest(role="reader"), timeout=TIMEOUT_S)
        self.assertEqual(resp.key.role, "viewer")
        key_id = resp.key.key_id
        revoked = self.keys.RevokeKey(self.pb.RevokeKeyRequest(key_id=key_id), timeout=TIMEOUT_S)
        self.assertTrue(revoked.HasField("revoked_at"))
        self.assertNoSecret(revoked, resp.api_key)
        again = self.keys.RevokeKey(self.pb.RevokeKeyRequest(key_id=key_id), timeout=TIMEOUT_S)
        self.assertEqual(again.revoked_at, revoked.revoked_at)
        got = self.keys.GetKey(self.pb.GetKeyRequest(key_id=key_id), timeout=TIMEOUT_S)
        self.assertEqual(got.revoked_at, revoked.revoked_at)

    def test_grpc_bad_role_is_invalid_argument_naming_role(self):
        for role in ("", "root", "Admin"):
            with self.subTest(role=role):
                with self.assertRaises(grpc.RpcError) as cm:
                    self.keys.CreateKey(self.pb.CreateKeyRequest(name="x", role=role),
                                        timeout=TIMEOUT_S)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
                self.assertTrue(cm.exception.details().startswith("role: "),
                                cm.exception.details())

    def test_grpc_unknown_and_malformed_ids_are_not_found(self):
        for key_id in ("AAAAAAAAAAAA", "x", "../../etc"):
            with self.subTest(key_id=key_id):
                for call, req in ((self.keys.GetKey, self.pb.GetKeyRequest(key_id=key_id)),
                                  (self.keys.RevokeKey,
                                   self.pb.RevokeKeyRequest(key_id=key_id))):
                    with self.assertRaises(grpc.RpcError) as cm:
                        call(req, timeout=TIMEOUT_S)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_rest_create_list_get_revoke(self):
        status, _, created = self.rest.request("POST", "/api/keys",
                                               {"name": "sdk", "role": "analyst"})
        self.assertEqual(status, 200, created)
        self.assertRegex(created["apiKey"], KEY_RE)
        key = created["key"]
        key_id = key["keyId"]
        self.assertEqual((key["accountId"], key["role"], key["name"]),
                         (ACCOUNT, "analyst", "sdk"))
        self.assertNotIn("revokedAt", key)

        status, _, got = self.rest.request("GET", "/api/keys/" + key_id)
        self.assertEqual(status, 200, got)
        self.assertEqual(got, key)
        status, _, listed = self.rest.request("GET", "/api/keys?pageSize=1000")
        self.assertEqual(status, 200, listed)
        self.assertIn(key, listed["keys"])
        for body in (got, listed):
            self.assertNoSecret(body, created["apiKey"])
            self.assertNotIn("apiKey", repr(body))

        status, _, revoked = self.rest.request("DELETE", "/api/keys/" + key_id)
        self.assertEqual(status, 200, revoked)
        self.assertIn("revokedAt", revoked)
        status, _, got = self.rest.request("GET", "/api/keys/" + key_id)
        self.assertEqual(got["revokedAt"], revoked["revokedAt"])

    def test_rest_bad_role_and_unknown_id(self):
        status, _, body = self.rest.request("POST", "/api/keys", {"name": "x", "role": "owner"})
        self.assertEqual(status, 400, body)
        self.assertEqual(body["code"], 3)
        self.assertTrue(body["message"].startswith("role: "), body)
        fields = [v["field"] for d in body["details"] for v in d.get("fieldViolations", [])]
        self.assertEqual(fields, ["role"])
        status, _, body = self.rest.request("GET", "/api/keys/AAAAAAAAAAAA")
        self.assertEqual(status, 404, body)
        status, _, body = self.rest.request("DELETE", "/api/keys/AAAAAAAAAAAA")
        self.assertEqual(status, 404, body)

    def test_rest_paging(self):
        for i in range(3):
            status, _, _ = self.rest.request("POST", "/api/keys", {"name": "p%d" % i,
                                                                   "role": "viewer"})
            self.assertEqual(status, 200)
        seen, token = [], ""
        while True:
            status, _, page = self.rest.request("GET", "/api/keys?pageSize=2&pageToken=" + token)
            self.assertEqual(status, 200, page)
            self.assertLessEqual(len(page["keys"]), 2)
            seen += [k["keyId"] for k in page["keys"]]
            token = page.get("nextPageToken", "")
            if not token:
                break
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(len(seen), len(set(seen)))
        self.assertGreaterEqual(len(seen), 3)

    def test_offline_create_is_listed_by_the_running_server(self):
        p = self.offline("create", "--account", ACCOUNT, "--role", "admin", "--name", "boot")
        key = p.stdout.strip()
        m = KEY_RE.match(key)
        self.assertIsNotNone(m, p.stdout)
        self.assertEqual(p.stdout, key + "\n")  # the key alone on stdout
        key_id = m.group(1)
        got = self.keys.GetKey(self.pb.GetKeyRequest(key_id=key_id), timeout=TIMEOUT_S)
        self.assertEqual((got.account_id, got.role, got.name, got.created_by),
                         (ACCOUNT, "admin", "boot", "cli"))
        listed = self.offline("list", "--account", ACCOUNT)
        self.assertIn(key_id, listed.stdout)
        self.assertNotIn(key.split("_")[2], listed.stdout + listed.stderr)
        # Revoked offline: the server sees it.
        self.offline("revoke", key_id)
        got = self.keys.GetKey(self.pb.GetKeyRequest(key_id=key_id), timeout=TIMEOUT_S)
        self.assertTrue(got.HasField("revoked_at"))

    def test_another_accounts_key_is_not_found(self):
        p = self.offline("create", "--account", "someone-else", "--role", "admin")
        key_id = KEY_RE.match(p.stdout.strip()).group(1)
        for call, req in ((self.keys.GetKey, self.pb.GetKeyRequest(key_id=key_id)),
                          (self.keys.RevokeKey, self.pb.RevokeKeyRequest(key_id=key_id))):
            with self.assertRaises(grpc.RpcError) as cm:
                call(req, timeout=TIMEOUT_S)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
            self.assertNotIn("someone-else", cm.exception.details())
        status, _, body = self.rest.request("GET", "/api/keys/" + key_id)
        self.assertEqual(status, 404, body)
        listed = self.keys.ListKeys(self.pb.ListKeysRequest(page_size=1000), timeout=TIMEOUT_S)
        self.assertNotIn(key_id, [k.key_id for k in listed.keys])
        # Not revoked by those attempts.
        out = self.offline("list", "--account", "someone-else").stdout
        self.assertIn("revoked -", out)
        # Creating for another account is refused.
        with self.assertRaises(grpc.RpcError) as cm:
            self.keys.CreateKey(self.pb.CreateKeyRequest(role="admin", account_id="someone-else"),
                                timeout=TIMEOUT_S)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)

    def test_offline_bad_usage(self):
        for args in (("create", "--account", ACCOUNT, "--role", "boss"),
                     ("create", "--role", "admin"),
                     ("list",),
                     ("revoke",),
                     ("frobnicate",)):
            with self.subTest(args=args):
                p = self.offline(*args, check=False)
                self.assertEqual(p.returncode, 2, p.stderr)
                self.assertEqual(p.stdout, "")
        p = self.offline("revoke", "AAAAAAAAAAAA", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("not found", p.stderr)
