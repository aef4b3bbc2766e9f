"""Runs the real analyticsd binary for the integration tests.

`Server` starts the binary on free ports with a fresh data directory,
captures stderr (JSON log lines) to a file, waits until grpc.health.v1
Check answers SERVING and stops it with SIGTERM (SIGKILL after a timeout,
which fails the test).

`RemoteBridge` runs analytics-restbridge (the REST bridge in remote mode)
in front of a Server; a ServerTestCase with BRIDGE = "remote" talks REST
and WebSocket to it instead of analyticsd's own PORT (`rest_port`).

Environment:
  ANALYTICSD      path of the binary (default <repo>/build/server/analyticsd)
  ANALYTICS_RESTBRIDGE  path of analytics-restbridge (default: beside the
                  build's analyticsd, <build>/restbridge/analytics-restbridge)
  ANA_TEST_KEEP   if set, temporary directories (data, logs, stubs) are kept
  ANA_TEST_EVENT_STORE  "clickhouse": every Server that does not set
                  CLICKHOUSE_HOST itself stores its events in a clickhouse-server
                  started once for the run (on loopback), each in its own
                  database; unset or "sqlite": the embedded store
"""

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import grpc

import stubs

REPO = stubs.REPO
DEFAULT_BINARY = os.path.join(REPO, "build", "server", "analyticsd")

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
LOG_LEVELS = ("error", "warn", "info", "debug")

# Variables of the service's configuration: never inherited from the
# environment of the test run, only set explicitly.
CONFIG_VARS = (
    "PORT", "GRPC_PORT", "GRPC_HOST", "MONGODB_URI", "ELASTICSEARCH_NODE", "TRUSTED_PROXIES",
    "CLICKHOUSE_HOST", "CLICKHOUSE_DATABASE", "CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_CA_FILE", "CLICKHOUSE_TIMEOUT", "CLICKHOUSE_BATCH_ROWS",
    "CLICKHOUSE_BATCH_INTERVAL", "CLICKHOUSE_GZIP", "CLICKHOUSE_GZIP_LEVEL", "CLICKHOUSE_SHIPPED_MERGE",
    "SPOOL_MAX_BYTES", "REDIS_URL", "RABBITMQ_URL", "DATA_DIR",
    "REPORTS_DIR",
    "EXPORTS_DIR", "RETENTION_DAYS", "STORE_STAGING_MAX_EVENTS", "STORE_STAGING_WAIT",
    "BATCH_SIZE", "PROCESSING_INTERVAL",
    "STREAM_BUFFER_SIZE", "STREAM_SEND_QUEUE_MAX", "GRPC_MAX_MESSAGE_BYTES", "PROTO_MAX_DEPTH",
    "GRPC_THREADS", "SHUTDOWN_GRACE_MS", "DEFAULT_ACCOUNT_ID", "LOG_LEVEL", "ACCESS_LOG_SAMPLE",
    "ACCESS_LOG_MAX_PER_S",
    "HTTP_MAX_BODY_BYTES", "CORS_ALLOWED_ORIGINS", "WS_SLOW_CONSUMER_MS",
    "REALTIME_AGGREGATE_INTERVAL", "REALTIME_SLOW_CONSUMER_MS", "WEB_ROOT",
    "RESTBRIDGE_UPSTREAM", "METRIC_STREAM_INTERVAL", "METRIC_STREAM_HISTORY",
    "ROLLUP_CACHE_MB", "WAL_CHECKPOINT_MB", "SEARCH_INDEX_WAIT", "EVENT_NAMES_MAX",
    "STORE_MIN_FREE_MB", "GRPC_MAX_CONCURRENT_STREAMS", "GRPC_MAX_METADATA_BYTES",
    "GRPC_STREAMS_PER_PEER", "METRIC_STREAMS_PER_PEER",
    "HTTP_BODY_BUDGET_MB", "HTTP_BODY_MIN_RATE", "HTTP_BODY_RATE_WINDOW", "HTTP_DECODE_THREADS",
    "STREAM_QUEUE_BUDGET_MB", "ALERT_MAX_INSTANCES", "ALERT_HISTORY_DAYS",
    "ALERT_QUEUE_MAX",
    "REPORT_WORKERS", "REPORT_QUEUE_MAX", "REPORT_RETENTION_DAYS", "REPORT_MAX_ATTEMPTS",
    "REPORT_ROLLUPS", "REPORT_AUTO_ROLLUPS",
    "SMTP_URL", "SMTP_USER", "SMTP_PASSWORD", "SMTP_PASSWORD_FILE", "SMTP_FROM",
    "TELEGRAM_API_URL", "NOTIFY_ALLOW_PRIVATE_NETWORKS", "NOTIFY_THREADS", "NOTIFY_MAX_ATTEMPTS",
    "NOTIFY_BACKOFF_INITIAL", "NOTIFY_BACKOFF_MAX", "NOTIFY_TIMEOUT", "NOTIFY_POLL_INTERVAL",
    "JWT_HS256_SECRET", "JWT_HS256_SECRET_FILE", "JWT_JWKS_FILE", "JWT_JWKS_URL",
    "JWT_ALGORITHMS", "JWT_ISSUER", "JWT_AUDIENCE", "JWT_LEEWAY", "JWT_ACCOUNT_CLAIM",
    "JWT_ROLES_CLAIM", "JWT_ACCOUNTS_CLAIM", "JWT_ALLOW_QUERY_TOKEN", "METRICS_REQUIRE_AUTH",
    "HEALTH_REQUIRE_AUTH", "HTTP_HOST", "HTTP_ALLOWED_HOSTS", "AUDIT_RETENTION_DAYS",
    "AUDIT_SIGN_INTERVAL", "AUDIT_QUEUE_MAX", "ENCRYPTION_KEY_FILE", "ENCRYPTED_FIELDS",
    "ENCRYPTION_PREVIOUS_KEY_FILE", "REENCRYPT_BATCH_EVENTS", "REENCRYPT_PAUSE",
    "HEALTH_REQUIRE_AUTH", "HTTP_HOST", "HTTP_ALLOWED_HOSTS", "RATE_LIMIT_DEFAULT", "RATE_LIMIT_ROLES",
    "RATE_LIMIT_ACCOUNTS", "RATE_LIMIT_KEYS", "RATE_LIMIT_MAX_ENTRIES",
    "GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE", "GRPC_TLS_CLIENT_CA_FILE", "HTTP_TLS_CERT_FILE",
    "HTTP_TLS_KEY_FILE", "HTTP_TLS_CLIENT_CA_FILE", "RESTBRIDGE_UPSTREAM_TLS",
    "RESTBRIDGE_UPSTREAM_CA_FILE", "RESTBRIDGE_UPSTREAM_CERT_FILE", "RESTBRIDGE_UPSTREAM_KEY_FILE",
    "RESTBRIDGE_UPSTREAM_SERVER_NAME",
)


class ServerError(AssertionError):
    """The server did not start, misbehaved while stopping, or is missing."""


def binary_path():
    return os.environ.get("ANALYTICSD") or DEFAULT_BINARY


def require_binary():
    path = binary_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ServerError("analyticsd binary not found at %s (build it, or set ANALYTICSD)"
                          % path)
    return path


def free_port():
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(extra=None):
    """The inherited environment without any configuration variable, plus extra."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
    return env


_shared_clickhouse = None
_clickhouse_databases = {}  # DATA_DIR -> its database: a restart on the same data finds its events


def event_store_env(data_dir):
    """The variables that point a Server at the run's ClickHouse when ANA_TEST_EVENT_STORE is
    "clickhouse" (started on first use, stopped at exit); {} otherwise."""
    global _shared_clickhouse
    if os.environ.get("ANA_TEST_EVENT_STORE", "sqlite") != "clickhouse":
        return {}
    import atexit
    import uuid
    import clickhouse  # imports this module: only when asked for
    if _shared_clickhouse is None:
        _shared_clickhouse = clickhouse.ClickHouse().start()
        atexit.register(_shared_clickhouse.cleanup)
    return {"CLICKHOUSE_HOST": _shared_clickhouse.url,
            "CLICKHOUSE_DATABASE": _clickhouse_databases.setdefault(
                os.path.realpath(data_dir), "t_" + uuid.uuid4().hex[:12]),
            "CLICKHOUSE_BATCH_INTERVAL": "50ms"}


def tail(text, lines=40):
    return "\n".join(text.splitlines()[-lines:])


class Server:
    """One analyticsd process.

    env:       extra environment (None values remove a variable)
    grace_ms:  SHUTDOWN_GRACE_MS
    args:      extra command-line arguments
    """

    def __init__(self, env=None, grace_ms=2000, log_level="debug", args=(), preexec=None,
                 grpc_credentials=None):
        self.binary = require_binary()
        # grpc.ssl_channel_credentials for a server with GRPC_TLS_*: used by
        # wait_ready and channel(); None = plaintext.
        self.grpc_credentials = grpc_credentials
        self.grpc_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.grpc_port:
            self.http_port = free_port()
        self.grace_ms = grace_ms
        self.workdir = tempfile.mkdtemp(prefix="ana-it-")
        self.data_dir = os.path.join(self.workdir, "data")
        os.mkdir(self.data_dir)
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        self.stdout_path = os.path.join(self.workdir, "stdout.log")
        self.env = base_env({
            "GRPC_HOST": "127.0.0.1",
            "GRPC_PORT": self.grpc_port,
            "PORT": self.http_port,
            "DATA_DIR": self.data_dir,
            "REPORTS_DIR": os.path.join(self.workdir, "reports"),
            "LOG_LEVEL": log_level,
            "SHUTDOWN_GRACE_MS": grace_ms,
        })
        if env:
            for k, v in env.items():
                if v is None:
                    self.env.pop(k, None)
                else:
                    self.env[k] = str(v)
        if not (env and "CLICKHOUSE_HOST" in env):
            for k, v in event_store_env(self.env.get("DATA_DIR", self.data_dir)).items():
                self.env.setdefault(k, v)
        self.args = list(args)
        self.preexec = preexec  # run in the child before exec (resource limits)
        self.proc = None
        self.returncode = None
        self.sigterm_at = None
        self.exited_at = None
        self._channels = []

    # -- lifecycle ---------------------------------------------------------

    @property
    def target(self):
        return "127.0.0.1:%d" % self.grpc_port

    @property
    def rest_port(self):
        """Port of the REST + WebSocket bridge (PORT)."""
        return self.http_port

    def start(self, wait_ready=True):
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen([self.binary] + self.args, env=self.env,
                                     cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     preexec_fn=self.preexec)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=READY_TIMEOUT_S):
        """Waits until Check("") answers SERVING; raises ServerError otherwise."""
        ns = stubs.load()
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                raise ServerError("analyticsd exited with %s before it was ready; "
                                  "stderr tail:\n%s" % (self.proc.returncode,
                                                        tail(self.stderr())))
            if not self._port_open():
                last = "port %d not accepting connections" % self.grpc_port
                time.sleep(0.05)
                continue
            # A fresh channel per attempt: no reconnect backoff in the way.
            ch = self._new_channel()
            try:
                resp = ns.health_pb2_grpc.HealthStub(ch).Check(
                    ns.health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == ns.health_pb2.HealthCheckResponse.SERVING:
                    return
                last = "Check answered %s" % ns.health_pb2.HealthCheckResponse.ServingStatus.Name(
                    resp.status)
            except grpc.RpcError as e:
                last = "Check failed: %s %s" % (e.code(), e.details())
            finally:
                ch.close()
            time.sleep(0.1)
        self.kill()
        raise ServerError("analyticsd not ready after %.0f s (%s); stderr tail:\n%s"
                          % (timeout, last, tail(self.stderr())))

    def _port_open(self):
        try:
            with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.5):
                return True
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self):
        """Sends SIGTERM (once) and records when."""
        if self.alive() and self.sigterm_at is None:
            self.sigterm_at = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout):
        """Waits for exit; returns the exit code or None on timeout."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return self.proc.returncode

    def stop(self, timeout=None):
        """SIGTERM, then wait; SIGKILL after the timeout and raise ServerError.

        Returns the exit code. timeout defaults to SHUTDOWN_GRACE_MS + 10 s.
        """
        if self.proc is None:
            return None
        if timeout is None:
            timeout = self.grace_ms / 1000.0 + 10.0
        self.close_channels()
        if self.proc.poll() is None:
            self.terminate()
            rc = self.wait_exit(timeout)
            if rc is None:
                self.kill()
                raise ServerError("analyticsd still running %.1f s after SIGTERM; killed. "
                                  "stderr tail:\n%s" % (timeout, tail(self.stderr())))
        self._reap()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reap()

    def _reap(self):
        if self.proc is not None and self.proc.returncode is not None:
            if self.exited_at is None:
                self.exited_at = time.monotonic()
            self.returncode = self.proc.returncode
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f is not None and not f.closed and self.returncode is not None:
                f.close()

    def cleanup(self):
        """Kills the process if still running and removes the work directory."""
        self.close_channels()
        self.kill()
        if not os.environ.get("ANA_TEST_KEEP"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- clients -----------------------------------------------------------

    def _new_channel(self, options=None):
        if self.grpc_credentials is not None:
            return grpc.secure_channel(self.target, self.grpc_credentials, options=options or [])
        return grpc.insecure_channel(self.target, options=options or [])

    def channel(self, options=None):
        ch = self._new_channel(options)
        self._channels.append(ch)
        return ch

    def close_channels(self):
        for ch in self._channels:
            try:
                ch.close()
            except Exception:
                pass
        self._channels = []

    # -- logs --------------------------------------------------------------

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stdout(self):
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """An offset into stderr; pass it to log_lines(since=...)."""
        try:
            return os.path.getsize(self.stderr_path)
        except FileNotFoundError:
            return 0

    def raw_log_lines(self, since=0):
        with open(self.stderr_path, "rb") as f:
            f.seek(since)
            data = f.read().decode("utf-8", "replace")
        parts = data.split("\n")
        if self.alive() and parts and parts[-1]:
            parts.pop()  # a line still being written
        return [l for l in parts if l.strip()]

    def log_lines(self, since=0):
        """Parsed JSON log lines; a line that is not JSON becomes {"_raw": line}."""
        out = []
        for l in self.raw_log_lines(since):
            try:
                obj = json.loads(l)
                if not isinstance(obj, dict):
                    obj = {"_raw": l}
            except ValueError:
                obj = {"_raw": l}
            out.append(obj)
        return out

    def error_lines(self, since=0):
        return [l for l in self.log_lines(since) if l.get("level") == "error"]


def restbridge_path():
    """analytics-restbridge of the same build as analyticsd."""
    if os.environ.get("ANALYTICS_RESTBRIDGE"):
        return os.environ["ANALYTICS_RESTBRIDGE"]
    build = os.path.dirname(os.path.dirname(os.path.abspath(binary_path())))
    return os.path.join(build, "restbridge", "analytics-restbridge")


class RemoteBridge:
    """One analytics-restbridge process forwarding to server (a Server).

    env: extra environment (the bridge-relevant variables of the server's
    test class: body limit, CORS, stream buffer...). Ready when its /health
    answers 200, i.e. it reached the upstream.
    """

    def __init__(self, server, env=None, args=(), ssl_context=None):
        self.binary = restbridge_path()
        self.args = list(args)  # extra arguments (--upstream-ca ...)
        self.ssl_context = ssl_context  # for its /health over HTTPS (HTTP_TLS_*)
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise ServerError("analytics-restbridge not found at %s (build it, or set "
                              "ANALYTICS_RESTBRIDGE)" % self.binary)
        self.port = free_port()
        self.stderr_path = os.path.join(server.workdir, "restbridge.log")
        self.env = base_env({"PORT": self.port, "LOG_LEVEL": "debug",
                             "SHUTDOWN_GRACE_MS": server.grace_ms})
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.upstream = server.target
        self.proc = None

    def start(self, timeout=READY_TIMEOUT_S):
        import http.client
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([self.binary, "--upstream", self.upstream] + self.args,
                                     env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err)
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError("analytics-restbridge exited with %s; stderr tail:\n%s"
                                  % (self.proc.returncode, tail(self.stderr())))
            try:
                if self.ssl_context is not None:
                    conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=1,
                                                       context=self.ssl_context)
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/health")
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.status == 200:
                    return self
                last = "/health answered %d %r" % (resp.status, body[:200])
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        self.stop()
        raise ServerError("analytics-restbridge not ready after %.0f s (%s); stderr tail:\n%s"
                          % (timeout, last, tail(self.stderr())))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM, then wait; returns the exit code (SIGKILL and None on timeout)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return None
        self._err.close()
        return self.proc.returncode

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


# Variables of a test class's SERVER_ENV that concern the bridge, so that
# the remote bridge is configured like analyticsd's own.
BRIDGE_VARS = ("HTTP_MAX_BODY_BYTES", "CORS_ALLOWED_ORIGINS", "WS_SLOW_CONSUMER_MS",
               "STREAM_BUFFER_SIZE", "HTTP_BODY_BUDGET_MB", "HTTP_BODY_MIN_RATE",
               "HTTP_BODY_RATE_WINDOW", "HTTP_DECODE_THREADS", "STREAM_QUEUE_BUDGET_MB",
               "PROTO_MAX_DEPTH", "HTTP_HOST", "HTTP_TLS_CERT_FILE", "HTTP_TLS_KEY_FILE",
               "HTTP_TLS_CLIENT_CA_FILE", "HTTP_ALLOWED_HOSTS", "ACCESS_LOG_SAMPLE",
               "ACCESS_LOG_MAX_PER_S", "TRUSTED_PROXIES")


class StreamReader:
    """Drains a response-streaming call on a thread.

    Messages arrive in a queue; when the call ends, `code` and `details`
    are set (code is grpc.StatusCode.OK for a clean end) and `ended` is set.
    """

    def __init__(self, call):
        self.call = call
        self.messages = queue.Queue()
        self.received = []
        self.code = None
        self.details = None
        self.ended = threading.Event()
        self.ended_at = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for m in self.call:
                self.received.append(m)
                self.messages.put(m)
            self.code = grpc.StatusCode.OK
            self.details = ""
        except grpc.RpcError as e:
            self.code = e.code()
            self.details = e.details()
        except Exception as e:  # pragma: no cover - reported as a failure by callers
            self.code = "exception"
            self.details = repr(e)
        finally:
            self.ended_at = time.monotonic()
            self.ended.set()

    def next(self, timeout):
        """The next message, or None if none arrived within timeout."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_end(self, timeout):
        return self.ended.wait(timeout)

    def cancel(self):
        self.call.cancel()


class ServerTestCase(unittest.TestCase):
    """One server per test class, started in setUpClass and stopped in tearDownClass.

    Subclasses may set SERVER_ENV (dict) and GRACE_MS, and BRIDGE: "in-process"
    (REST on analyticsd's own PORT) or "remote" (analytics-restbridge pointed
    at the server). `rest_port` is the port of whichever serves REST.
    """

    SERVER_ENV = None
    GRACE_MS = 2000
    BRIDGE = "in-process"
    bridge = None

    @classmethod
    def setUpClass(cls):
        cls.ns = stubs.load()
        cls.server = Server(env=cls.SERVER_ENV, grace_ms=cls.GRACE_MS)
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise
        cls.channel = cls.server.channel()
        cls.health = cls.ns.health_pb2_grpc.HealthStub(cls.channel)
        cls.rest_port = cls.server.http_port
        if cls.BRIDGE == "remote":
            env = {k: v for k, v in (cls.SERVER_ENV or {}).items() if k in BRIDGE_VARS}
            cls.bridge = RemoteBridge(cls.server, env=env)
            try:
                cls.bridge.start()
            except BaseException:
                cls.bridge.stop()
                cls.server.cleanup()
                raise
            cls.rest_port = cls.bridge.port

    @classmethod
    def tearDownClass(cls):
        if cls.bridge is not None:
            brc = cls.bridge.stop()
            cls.bridge = None
            if brc != 0:
                cls.server.cleanup()
                raise ServerError("analytics-restbridge exited with %s after SIGTERM" % brc)
        try:
            rc = cls.server.stop()
            if rc != 0:
                raise ServerError("analyticsd exited with %s after SIGTERM; stderr tail:\n%s"
                                  % (rc, tail(cls.server.stderr())))
        finally:
            cls.server.cleanup()

    def assertServerAlive(self):
        self.assertTrue(self.server.alive(), "analyticsd died (exit %s); stderr tail:\n%s"
                        % (self.server.proc.poll(), tail(self.server.stderr())))
        if self.bridge is not None:
            self.assertTrue(self.bridge.alive(), "analytics-restbridge died; stderr tail:\n%s"
                            % tail(self.bridge.stderr()))

    def assertServing(self, channel=None, fresh=False):
        """A Check("") answers SERVING: on the class's channel, on the given one,
        or (fresh=True) on a new connection."""
        self.assertServerAlive()
        own = None
        if fresh:
            own = channel = grpc.insecure_channel(
                self.server.target, options=[("grpc.use_local_subchannel_pool", 1)])
        stub = self.health if channel is None else self.ns.health_pb2_grpc.HealthStub(channel)
        try:
            resp = stub.Check(self.ns.health_pb2.HealthCheckRequest(service=""), timeout=5)
        except grpc.RpcError as e:
            self.fail("Check failed: %s %s" % (e.code(), e.details()))
        finally:
            if own is not None:
                own.close()
        self.assertEqual(resp.status, self.ns.health_pb2.HealthCheckResponse.SERVING)

    def assertNoErrorLogs(self, since=0):
        errs = self.server.error_lines(since)
        self.assertEqual(errs, [], "error-level log lines: %s" % json.dumps(errs)[:4000])


def start_server(testcase, **kw):
    """Starts a Server for one test; it is cleaned up after the test."""
    s = Server(**kw)
    testcase.addCleanup(s.cleanup)
    s.start()
    return s
