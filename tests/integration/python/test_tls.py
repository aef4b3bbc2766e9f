"""TLS on both ports (GRPC_TLS_*, HTTP_TLS_*), with a CA made by openssl here.

Server TLS and mutual TLS through every client: grpcio with ssl credentials,
HTTPS (urllib), WSS (websockets), analyticsctl (--ca/--cert/--key and
$ANALYTICS_*), and analytics-restbridge (TLS to its upstream and on its own
port). Under mTLS a client without a certificate, or with one from another
CA, is refused; plaintext is refused on a TLS port; the HTTP port offers
ALPN http/1.1 only; SIGHUP reloads the certificate (the served serial
changes) and a bad file on reload keeps the old one; a half-configured or
bad setting refuses start naming the variable and path.
"""

import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import grpc
import websockets

import harness

TIMEOUT_S = 10


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=TIMEOUT_S)


class Pki:
    """A CA, a server certificate for localhost/127.0.0.1 and a client one, plus
    a second CA's client certificate (not trusted by the server)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ana-tls-")
        self.ca, self.ca_key = self.path("ca.pem"), self.path("ca.key")
        self.make_ca(self.ca, self.ca_key, "ana-test-ca")
        self.server_key = self.path("server.key")
        self.server = self.path("server.pem")
        self.issue(self.server, self.server_key, "localhost", 0x1001,
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        self.client, self.client_key = self.path("client.pem"), self.path("client.key")
        self.issue(self.client, self.client_key, "client", 0x2001,
                   "extendedKeyUsage=clientAuth\n")
        rogue_ca, rogue_ca_key = self.path("rogue-ca.pem"), self.path("rogue-ca.key")
        self.make_ca(rogue_ca, rogue_ca_key, "rogue-ca")
        self.rogue, self.rogue_key = self.path("rogue.pem"), self.path("rogue.key")
        self.issue(self.rogue, self.rogue_key, "rogue", 0x3001, "extendedKeyUsage=clientAuth\n",
                   ca=(rogue_ca, rogue_ca_key))

    def path(self, name):
        return os.path.join(self.dir, name)

    def make_ca(self, cert, key, cn):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn)

    def issue(self, cert, key, cn, serial, ext, ca=None, reuse_key=False):
        ca_cert, ca_key = ca or (self.ca, self.ca_key)
        csr, extfile = cert + ".csr", cert + ".ext"
        with open(extfile, "w") as f:
            f.write(ext)
        if reuse_key:
            openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=" + cn)
        else:
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-set_serial",
                hex(serial), "-out", cert, "-days", "2", "-extfile", extfile)

    def read(self, name):
        with open(name, "rb") as f:
            return f.read()

    def grpc_credentials(self, client_cert=True, cert=None, key=None):
        if not client_cert:
            return grpc.ssl_channel_credentials(root_certificates=self.read(self.ca))
        return grpc.ssl_channel_credentials(root_certificates=self.read(self.ca),
                                            private_key=self.read(key or self.client_key),
                                            certificate_chain=self.read(cert or self.client))

    def ssl_context(self, client_cert=True, cert=None, key=None, alpn=None):
        ctx = ssl.create_default_context(cafile=self.ca)
        if client_cert:
            ctx.load_cert_chain(cert or self.client, key or self.client_key)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def served_serial(port, ctx):
    """The serial number (upper-case hex) of the certificate served on port."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-noout", "-serial"], capture_output=True,
                         input=ssl.DER_cert_to_PEM_cert(der).encode(), timeout=TIMEOUT_S,
                         check=True).stdout.decode()
    return out.strip().split("=", 1)[1].upper()


def https(port, ctx, path="/health", body=None):
    """(status, parsed JSON body) of a request over HTTPS."""
    req = urllib.request.Request("https://127.0.0.1:%d%s" % (port, path),
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=TIMEOUT_S) as resp:
        return resp.status, json.loads(resp.read())


def wss_frames(port, ctx, path="/ws/metrics/abc"):
    """The frames and close code of a WSS stream (an unknown metric: one error frame)."""
    async def go():
        frames = []
        async with websockets.connect("wss://localhost:%d%s" % (port, path), ssl=ctx,
                                      open_timeout=TIMEOUT_S) as ws:
            try:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S)))
            except websockets.ConnectionClosed:
                pass
            return frames, ws.close_code
    return asyncio.run(asyncio.wait_for(go(), TIMEOUT_S * 2))


def ctl_path():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(harness.binary_path()))),
                        "client", "cli", "analyticsctl")


def ctl(target, *args, env=None):
    e = harness.base_env({k: None for k in ("ANALYTICS_TOKEN", "ANALYTICS_API_KEY",
                                             "ANALYTICS_ACCOUNT", "ANALYTICS_TARGET", "ANALYTICS_TLS",
                                             "ANALYTICS_CA", "ANALYTICS_CERT", "ANALYTICS_KEY",
                                             "ANALYTICS_SERVER_NAME")})
    e.update(env or {})
    return subprocess.run([ctl_path(), "--target", target, "--timeout", "5000"] + list(args),
                          env=e, capture_output=True, text=True, timeout=TIMEOUT_S * 2)


BATCH = {"events": [{"eventName": "tls_rest", "eventType": "test"},
                    {"eventName": "tls_rest", "eventType": "test"}]}


class TlsTestCase(unittest.TestCase):
    """One analyticsd with TLS on both ports; MTLS decides client certificates."""

    MTLS = False

    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()
        env = {"GRPC_TLS_CERT_FILE": cls.pki.server, "GRPC_TLS_KEY_FILE": cls.pki.server_key,
               "HTTP_TLS_CERT_FILE": cls.pki.server, "HTTP_TLS_KEY_FILE": cls.pki.server_key}
        if cls.MTLS:
            env["GRPC_TLS_CLIENT_CA_FILE"] = cls.pki.ca
            env["HTTP_TLS_CLIENT_CA_FILE"] = cls.pki.ca
        cls.env = env
        cls.server = harness.Server(env=env, log_level="info",
                                    grpc_credentials=cls.pki.grpc_credentials(cls.MTLS))
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            cls.pki.cleanup()
            raise
        ns = harness.stubs.load()
        cls.ns = ns
        cls.events_pb, cls.events_grpc = ns.analytics["events"]

    @classmethod
    def tearDownClass(cls):
        try:
            rc = cls.server.stop()
            if rc != 0:
                raise harness.ServerError("analyticsd exited with %s; stderr tail:\n%s"
                                          % (rc, harness.tail(cls.server.stderr())))
        finally:
            cls.server.cleanup()
            cls.pki.cleanup()

    def grpc_batch(self, creds):
        ch = grpc.secure_channel(self.server.target, creds)
        try:
            stub = self.events_grpc.EventServiceStub(ch)
            events = [self.events_pb.Event(event_name="tls_grpc", event_type="test")
                      for _ in range(3)]
            resp = stub.TrackEvents(self.events_pb.TrackEventsRequest(events=events), timeout=5)
            return [r.status for r in resp.results]
        finally:
            ch.close()

    def assertGrpcRefused(self, channel):
        try:
            stub = self.ns.health_pb2_grpc.HealthStub(channel)
            with self.assertRaises(grpc.RpcError) as cm:
                stub.Check(self.ns.health_pb2.HealthCheckRequest(service=""), timeout=3)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        finally:
            channel.close()

    def remote_bridge(self, args, env=None, ctx=None):
        bridge = harness.RemoteBridge(self.server, env=env, args=args, ssl_context=ctx)
        self.addCleanup(bridge.stop)
        bridge.start()
        return bridge


class MutualTlsTest(TlsTestCase):
    MTLS = True

    def test_grpc_batch_ingest_with_a_client_certificate(self):
        st = self.grpc_batch(self.pki.grpc_credentials())
        self.assertEqual(st, [self.events_pb.EventResult.ACCEPTED] * 3)

    def test_grpc_without_a_client_certificate_is_refused(self):
        self.assertGrpcRefused(grpc.secure_channel(self.server.target,
                                                   self.pki.grpc_credentials(False)))
        rogue = self.pki.grpc_credentials(cert=self.pki.rogue, key=self.pki.rogue_key)
        self.assertGrpcRefused(grpc.secure_channel(self.server.target, rogue))

    def test_grpc_plaintext_is_refused(self):
        self.assertGrpcRefused(grpc.insecure_channel(self.server.target))

    def test_https_rest_batch_with_a_client_certificate(self):
        status, body = https(self.server.rest_port, self.pki.ssl_context(), "/api/events/batch",
                             BATCH)
        self.assertEqual(status, 200)
        self.assertEqual([r["status"] for r in body["results"]], ["ACCEPTED"] * 2)

    def test_https_without_a_client_certificate_is_refused(self):
        for ctx in (self.pki.ssl_context(client_cert=False),
                    self.pki.ssl_context(cert=self.pki.rogue, key=self.pki.rogue_key)):
            with self.assertRaises((ssl.SSLError, ConnectionError, urllib.error.URLError,
                                    http.client.HTTPException)):
                https(self.server.rest_port, ctx)

    def test_plaintext_http_is_refused(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.rest_port, timeout=TIMEOUT_S)
        with self.assertRaises((http.client.HTTPException, ConnectionError)):
            conn.request("GET", "/health")
            conn.getresponse().read()
        conn.close()

    def test_alpn_offers_http_1_1_only(self):
        ctx = self.pki.ssl_context(alpn=["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", self.server.rest_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        ctx = self.pki.ssl_context(alpn=["h2"])
        with socket.create_connection(("127.0.0.1", self.server.rest_port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                self.assertIsNone(s.selected_alpn_protocol())

    def test_wss_stream_with_a_client_certificate(self):
        frames, code = wss_frames(self.server.rest_port, self.pki.ssl_context())
        self.assertEqual(code, 4005)  # 4000 + NOT_FOUND
        self.assertEqual(frames[0]["error"]["code"], 5)

    def test_analyticsctl_flags_and_environment(self):
        pki = self.pki
        r = ctl(self.server.target, "--ca", pki.ca, "--cert", pki.client, "--key",
                pki.client_key, "health")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("SERVING", r.stdout)
        r = ctl(self.server.target, "health", env={"ANALYTICS_CA": pki.ca,
                                                   "ANALYTICS_CERT": pki.client,
                                                   "ANALYTICS_KEY": pki.client_key,
                                                   "ANALYTICS_SERVER_NAME": "localhost"})
        self.assertEqual(r.returncode, 0, r.stderr)
        r = ctl(self.server.target, "--ca", pki.ca, "track", "test", "tls_ctl", env={
            "ANALYTICS_CERT": pki.client, "ANALYTICS_KEY": pki.client_key})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["accepted"], 1, r.stdout)
        r = ctl(self.server.target, "--ca", pki.ca, "health")  # no client certificate
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr)
        r = ctl(self.server.target, "--ca", pki.ca, "--cert", pki.client, "health")
        self.assertEqual(r.returncode, 2)
        self.assertIn("key is missing", r.stderr)
        r = ctl(self.server.target, "--ca", os.path.join(pki.dir, "nope.pem"), "health")
        self.assertEqual(r.returncode, 2)
        self.assertIn("nope.pem", r.stderr)

    def test_remote_bridge_with_mutual_tls_on_both_sides(self):
        pki = self.pki
        bridge = self.remote_bridge(
            ["--upstream-ca", pki.ca, "--upstream-cert", pki.client, "--upstream-key",
             pki.client_key],
            env={"HTTP_TLS_CERT_FILE": pki.server, "HTTP_TLS_KEY_FILE": pki.server_key,
                 "HTTP_TLS_CLIENT_CA_FILE": pki.ca},
            ctx=pki.ssl_context())
        status, body = https(bridge.port, pki.ssl_context(), "/api/events/batch", BATCH)
        self.assertEqual(status, 200)
        self.assertEqual([r["status"] for r in body["results"]], ["ACCEPTED"] * 2)
        frames, code = wss_frames(bridge.port, pki.ssl_context())  # a stream upstream
        self.assertEqual((code, frames[0]["error"]["code"]), (4005, 5))
        with self.assertRaises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
            https(bridge.port, pki.ssl_context(client_cert=False))

    def test_remote_bridge_without_a_client_certificate_gets_no_upstream(self):
        bridge = harness.RemoteBridge(self.server, args=["--upstream-ca", self.pki.ca])
        bridge.env["RESTBRIDGE_UPSTREAM_TLS"] = "true"
        self.addCleanup(bridge.stop)
        with self.assertRaises(harness.ServerError) as cm:
            bridge.start(timeout=3)
        self.assertIn("503", str(cm.exception))


class ServerTlsTest(TlsTestCase):
    """TLS without client certificates: the server's certificate is checked."""

    def test_grpc_and_https_and_wss(self):
        st = self.grpc_batch(self.pki.grpc_credentials(False))
        self.assertEqual(st, [self.events_pb.EventResult.ACCEPTED] * 3)
        status, _ = https(self.server.rest_port, self.pki.ssl_context(False), "/api/events/batch",
                          BATCH)
        self.assertEqual(status, 200)
        frames, code = wss_frames(self.server.rest_port, self.pki.ssl_context(False))
        self.assertEqual(code, 4005)  # 4000 + NOT_FOUND

    def test_a_client_trusting_another_ca_is_refused(self):
        r = ctl(self.server.target, "--tls", "health")  # the system's roots
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr)
        with self.assertRaises(urllib.error.URLError):
            https(self.server.rest_port, ssl.create_default_context())

    def test_analyticsctl_and_remote_bridge(self):
        r = ctl(self.server.target, "health", env={"ANALYTICS_CA": self.pki.ca})
        self.assertEqual(r.returncode, 0, r.stderr)
        bridge = self.remote_bridge([], env={"RESTBRIDGE_UPSTREAM_CA_FILE": self.pki.ca})
        conn = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=TIMEOUT_S)
        conn.request("POST", "/api/events/batch", json.dumps(BATCH),
                     {"Content-Type": "application/json"})
        self.assertEqual(conn.getresponse().status, 200)
        conn.close()


class ReloadTest(TlsTestCase):
    """SIGHUP reloads the files on both ports; a bad file keeps the old certificate."""

    MTLS = True

    def test_sighup_serves_the_new_certificate(self):
        pki, srv = self.pki, self.server
        ctx_h1, ctx_h2 = pki.ssl_context(alpn=["http/1.1"]), pki.ssl_context(alpn=["h2"])
        self.assertEqual(served_serial(srv.rest_port, ctx_h1), "1001")
        self.assertEqual(served_serial(srv.grpc_port, ctx_h2), "1001")
        pki.issue(pki.server, pki.server_key, "localhost", 0x1002,
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            if (served_serial(srv.rest_port, ctx_h1) == "1002"
                    and served_serial(srv.grpc_port, ctx_h2) == "1002"):
                break
            time.sleep(0.05)
        self.assertEqual(served_serial(srv.rest_port, ctx_h1), "1002")
        self.assertEqual(served_serial(srv.grpc_port, ctx_h2), "1002")
        self.assertEqual(self.grpc_batch(pki.grpc_credentials()),
                         [self.events_pb.EventResult.ACCEPTED] * 3)
        self.assertEqual(https(srv.rest_port, pki.ssl_context())[0], 200)

        # A key that does not match: refused, logged, the certificate in use stays.
        mark = srv.log_mark()
        good_key = pki.read(pki.server_key)
        pki.issue(pki.path("other.pem"), pki.path("other.key"), "other", 0x1003,
                  "extendedKeyUsage=serverAuth\n")
        shutil.copy(pki.path("other.key"), pki.server_key)
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and len(srv.error_lines(mark)) < 2:
            time.sleep(0.05)
        msgs = " ".join(line.get("msg", "") for line in srv.error_lines(mark))
        self.assertIn("GRPC_TLS_KEY_FILE", msgs)
        self.assertIn("HTTP_TLS_KEY_FILE", msgs)
        self.assertIn("does not match", msgs)
        with open(pki.server_key, "wb") as f:
            f.write(good_key)
        self.assertEqual(served_serial(srv.rest_port, ctx_h1), "1002")
        self.assertEqual(served_serial(srv.grpc_port, ctx_h2), "1002")
        self.assertTrue(srv.alive())


class ClientCaReloadTest(TlsTestCase):
    """SIGHUP reads GRPC_TLS_CLIENT_CA_FILE / HTTP_TLS_CLIENT_CA_FILE again."""

    MTLS = True

    def test_sighup_swaps_the_client_ca(self):
        pki, srv = self.pki, self.server
        new_ca, new_ca_key = pki.path("ca2.pem"), pki.path("ca2.key")
        pki.make_ca(new_ca, new_ca_key, "ana-test-ca-2")
        client2, client2_key = pki.path("client2.pem"), pki.path("client2.key")
        pki.issue(client2, client2_key, "client2", 0x2002, "extendedKeyUsage=clientAuth\n",
                  ca=(new_ca, new_ca_key))
        old_ca = pki.read(pki.ca)
        self.addCleanup(lambda: open(pki.ca, "wb").write(old_ca))
        shutil.copy(new_ca, pki.ca)  # the file the server was started with
        # The test's clients still check the server against the first CA.
        server_roots = old_ca
        mark = srv.log_mark()
        srv.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            msgs = [l.get("msg") for l in srv.log_lines(mark)]
            if "HTTP TLS certificate reloaded" in msgs and "gRPC TLS certificate reloaded" in msgs:
                break
            time.sleep(0.05)
        ctx2 = ssl.create_default_context(cadata=server_roots.decode())
        ctx2.load_cert_chain(client2, client2_key)
        self.assertEqual(https(srv.rest_port, ctx2)[0], 200)
        ctx1 = ssl.create_default_context(cadata=server_roots.decode())
        ctx1.load_cert_chain(pki.client, pki.client_key)
        with self.assertRaises((ssl.SSLError, ConnectionError, urllib.error.URLError,
                                http.client.HTTPException)):
            https(srv.rest_port, ctx1)
        creds2 = grpc.ssl_channel_credentials(root_certificates=server_roots,
                                              private_key=pki.read(client2_key),
                                              certificate_chain=pki.read(client2))
        self.assertEqual(self.grpc_batch(creds2), [self.events_pb.EventResult.ACCEPTED] * 3)
        creds1 = grpc.ssl_channel_credentials(root_certificates=server_roots,
                                              private_key=pki.read(pki.client_key),
                                              certificate_chain=pki.read(pki.client))
        self.assertGrpcRefused(grpc.secure_channel(srv.target, creds1))


class UpstreamCertReloadTest(TlsTestCase):
    """analytics-restbridge reads its upstream client certificate again on SIGHUP."""

    MTLS = True

    def post(self, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
        try:
            conn.request("POST", "/api/events/batch", body=json.dumps(BATCH),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def reload(self, bridge):
        mark = len(bridge.stderr())
        bridge.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT_S
        while "upstream TLS files read again" not in bridge.stderr()[mark:]:
            self.assertLess(time.monotonic(), deadline, harness.tail(bridge.stderr()))
            time.sleep(0.05)

    def test_sighup_reloads_the_upstream_client_certificate(self):
        pki = self.pki
        cert, key = pki.path("bridge-client.pem"), pki.path("bridge-client.key")
        shutil.copy(pki.client, cert)
        shutil.copy(pki.client_key, key)
        bridge = self.remote_bridge(["--upstream-ca", pki.ca, "--upstream-cert", cert,
                                     "--upstream-key", key])
        self.assertEqual(self.post(bridge.port), 200)
        # A certificate the upstream does not trust: new calls are refused.
        shutil.copy(pki.rogue, cert)
        shutil.copy(pki.rogue_key, key)
        self.reload(bridge)
        self.assertEqual(self.post(bridge.port), 503)
        # A new trusted certificate: served again.
        client3, client3_key = pki.path("client3.pem"), pki.path("client3.key")
        pki.issue(client3, client3_key, "client3", 0x2003, "extendedKeyUsage=clientAuth\n")
        shutil.copy(client3, cert)
        shutil.copy(client3_key, key)
        self.reload(bridge)
        self.assertEqual(self.post(bridge.port), 200)
        # An unreadable file on reload keeps the certificate in use.
        with open(cert, "w") as f:
            f.write("not a certificate\n")
        bridge.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + TIMEOUT_S
        while "upstream TLS reload refused" not in bridge.stderr():
            self.assertLess(time.monotonic(), deadline, harness.tail(bridge.stderr()))
            time.sleep(0.05)
        self.assertEqual(self.post(bridge.port), 200)


class StartRefusedTest(unittest.TestCase):
    """A half-configured or bad TLS setting refuses start, naming the variable and path."""

    @classmethod
    def setUpClass(cls):
        cls.pki = Pki()
        with open(cls.pki.path("garbage.pem"), "w") as f:
            f.write("not a certificate\n")

    @classmethod
    def tearDownClass(cls):
        cls.pki.cleanup()

    def refused(self, env):
        s = harness.Server(env=env, log_level="warn")
        self.addCleanup(s.cleanup)
        s.start(wait_ready=False)
        rc = s.wait_exit(TIMEOUT_S * 2)
        self.assertNotIn(rc, (None, 0), "analyticsd started with %s" % env)
        self.assertNotEqual(rc, -signal.SIGABRT, harness.tail(s.stderr()))
        return s.stderr()

    def test_half_configured_and_bad_files(self):
        p = self.pki
        cases = [
            ({"GRPC_TLS_CERT_FILE": p.server}, "GRPC_TLS_KEY_FILE: not set"),
            ({"HTTP_TLS_KEY_FILE": p.server_key}, "HTTP_TLS_CERT_FILE: not set"),
            ({"HTTP_TLS_CLIENT_CA_FILE": p.ca}, "HTTP_TLS_CERT_FILE: not set"),
            ({"GRPC_TLS_CERT_FILE": p.path("missing.pem"), "GRPC_TLS_KEY_FILE": p.server_key},
             "GRPC_TLS_CERT_FILE: cannot read %s" % p.path("missing.pem")),
            ({"HTTP_TLS_CERT_FILE": p.path("garbage.pem"), "HTTP_TLS_KEY_FILE": p.server_key},
             "HTTP_TLS_CERT_FILE: %s holds no PEM certificate" % p.path("garbage.pem")),
            ({"GRPC_TLS_CERT_FILE": p.server, "GRPC_TLS_KEY_FILE": p.client_key},
             "GRPC_TLS_KEY_FILE: the key in %s does not match" % p.client_key),
            ({"HTTP_TLS_CERT_FILE": p.server, "HTTP_TLS_KEY_FILE": p.server_key,
              "HTTP_TLS_CLIENT_CA_FILE": p.path("garbage.pem")},
             "HTTP_TLS_CLIENT_CA_FILE: %s holds no PEM certificate" % p.path("garbage.pem")),
        ]
        for env, expected in cases:
            with self.subTest(env=env):
                self.assertIn(expected, self.refused(env))


if __name__ == "__main__":
    unittest.main()
