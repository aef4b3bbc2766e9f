"""Tokens and transports for the authentication tests.

Mints JWTs exactly as an attacker or an identity provider would (HS256 with
hmac; RS256 and ES256 with python3-cryptography; any header, any payload,
any signature), writes JWKS documents, and calls one method over gRPC, REST
and WebSocket with given credentials, answering (status name, body text).
"""

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import re
import time

import grpc
import websockets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import stubs

SECRET = "analytics-test-secret-0123456789abcdef"  # >= 32 bytes
TIMEOUT_S = 5

# HTTP status -> gRPC status name, as the bridge maps them.
HTTP_TO_CODE = {200: "OK", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED",
                403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS",
                412: "FAILED_PRECONDITION", 413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT",
                429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
                501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
CODE_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(account="acme", roles=("admin",), ttl=600, **extra):
    now = int(time.time())
    c = {"sub": "user-1", "exp": now + ttl, "iat": now}
    if account is not None:
        c["account_id"] = account
    if roles is not None:
        c["roles"] = list(roles)
    c.update(extra)
    return c


def sign(header, payload, alg=None, secret=SECRET.encode(), key=None):
    """header and payload: dicts (or raw strings, used verbatim)."""
    h = b64(header if isinstance(header, str) else json.dumps(header))
    p = b64(payload if isinstance(payload, str) else json.dumps(payload))
    msg = ("%s.%s" % (h, p)).encode()
    alg = alg or (header.get("alg") if isinstance(header, dict) else "HS256")
    if alg == "HS256":
        sig = hmac.new(secret if isinstance(secret, bytes) else secret.encode(), msg,
                       hashlib.sha256).digest()
    elif alg == "RS256":
        sig = key.sign(msg, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        sig = b""
    return "%s.%s.%s" % (h, p, b64(sig))


def hs256(payload, **kw):
    return sign({"alg": "HS256", "typ": "JWT"}, payload, **kw)


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


def _int_b64(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return b64(n.to_bytes(size, "big"))


def jwk(key, kid):
    pub = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        nums = pub.public_numbers()
        return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                "n": _int_b64(nums.n), "e": _int_b64(nums.e)}
    nums = pub.public_numbers()
    return {"kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256", "use": "sig",
            "x": _int_b64(nums.x, 32), "y": _int_b64(nums.y, 32)}


def public_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


# --- transports -------------------------------------------------------------

def grpc_call(channel, path, payload=b"", metadata=(), server_streaming=False,
              client_streaming=False):
    """Calls a method with raw bytes; returns (status name, details)."""
    ms = dict(request_serializer=None, response_deserializer=None)
    md = list(metadata)
    try:
        if not client_streaming and not server_streaming:
            out = channel.unary_unary(path, **ms)(payload, timeout=TIMEOUT_S, metadata=md)
            return "OK", out
        if not client_streaming:
            got = b""
            call = channel.unary_stream(path, **ms)(payload, timeout=1.5, metadata=md)
            for msg in call:
                got += msg
                break  # the first message shows admission let it through
            return "OK", got
        if not server_streaming:
            out = channel.stream_unary(path, **ms)(iter([payload]), timeout=TIMEOUT_S,
                                                   metadata=md)
            return "OK", out
        got = b""
        for msg in channel.stream_stream(path, **ms)(iter([payload]), timeout=1.5,
                                                     metadata=md):
            got += msg
            break
        return "OK", got
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and server_streaming:
            return "OK", b""  # admitted, then no message within the wait: a live stream
        return e.code().name, e.details() or ""


def rest_call(port, verb, path, headers=None, body=None, host=None):
    """Returns (status name, body text, response headers dict lower-case)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    h = {"Connection": "close"}
    if body is not None:
        h["Content-Type"] = "application/json"
    if host:
        h["Host"] = host
    h.update(headers or {})
    try:
        conn.request(verb, path, body=body, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        name = HTTP_TO_CODE.get(resp.status, str(resp.status))
        if resp.status == 421:
            name = "MISDIRECTED"
        return name, text, hdrs
    finally:
        conn.close()


def rest_json(port, verb, path, token=None, body=None):
    """A REST call with an optional bearer token and JSON body: returns
    (HTTP status, the answer parsed when it is JSON, else its text or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    h = {"Connection": "close"}
    if token:
        h.update(bearer(token))
    if body is not None:
        h["Content-Type"] = "application/json"
    try:
        conn.request(verb, path, body=json.dumps(body) if body is not None else None, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode()
        return resp.status, json.loads(text) if text[:1] in ("{", "[") else text or None
    finally:
        conn.close()



def wait_health(port, pred, token=None, timeout=TIMEOUT_S, every=0.01):
    """Polls GET /health until pred(answer) holds: returns that answer, or
    raises AssertionError naming the last one (a background job's progress
    is shown there)."""
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = rest_json(port, "GET", "/health", token)[1]
        if isinstance(body, dict) and pred(body):
            return body
        time.sleep(every)
    raise AssertionError("/health never matched: %s" % (body,))

async def _ws(uri, subprotocols, headers):
    try:
        async with websockets.connect(uri, open_timeout=TIMEOUT_S, subprotocols=subprotocols,
                                      extra_headers=headers or {}) as ws:
            try:
                msg = await asyncio.wait_for(ws.recv(), 1.5)
            except asyncio.TimeoutError:
                return "OK", "", ws.subprotocol
            frame = json.loads(msg)
            if "error" in frame:
                return CODE_NAMES.get(frame["error"]["code"], str(frame["error"]["code"])), \
                    msg, ws.subprotocol
            return "OK", msg, ws.subprotocol
    except websockets.InvalidStatusCode as e:
        return "HTTP_%d" % e.status_code, "", None


def ws_call(port, path, subprotocols=None, headers=None):
    """Opens a WebSocket; returns (status name, first frame text, selected subprotocol)."""
    uri = "ws://127.0.0.1:%d%s" % (port, path)
    return asyncio.run(asyncio.wait_for(_ws(uri, subprotocols, headers), TIMEOUT_S * 3))


def ws_upgrade_status(port, path, host, origin=None, token=None):
    """The HTTP status a WebSocket upgrade with this Host (and Origin, and a
    token in the `bearer, <token>` subprotocol form) gets."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    h = {"Host": host, "Connection": "Upgrade", "Upgrade": "websocket",
         "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    if origin:
        h["Origin"] = origin
    if token:
        h["Sec-WebSocket-Protocol"] = "bearer, " + token
    try:
        conn.request("GET", path, headers=h)
        return conn.getresponse().status
    finally:
        conn.close()


def bearer(token):
    return {"Authorization": "Bearer " + token}


# --- the routes of the contracts ---------------------------------------------

def routes():
    """{method path: (verb, path template, body field)} from the google.api.http options."""
    ns = stubs.load()
    out = {}
    for m in stubs.analytics_methods():
        opts = m.descriptor.GetOptions()
        if not opts.HasExtension(ns.annotations_pb2.http):
            continue
        rule = opts.Extensions[ns.annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        if verb is None or verb == "custom":
            continue
        out[m.path] = (verb.upper(), getattr(rule, verb), rule.body)
    return out


def permission_of(method):
    ns = stubs.load()
    opts = method.descriptor.GetOptions()
    if opts.HasExtension(ns.options_pb2.policy):
        return opts.Extensions[ns.options_pb2.policy].permission
    return ""


def fill_template(template, value="x"):
    return re.sub(r"\{[^}]*\}", value, template)
