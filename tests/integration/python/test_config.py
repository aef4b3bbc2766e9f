"""Configuration from the environment: validation, --help, unsupported backends, log format."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

import grpc

import harness
import stubs

# Variables of the service specification, plus the service's own.
SPEC_VARS = ("PORT", "MONGODB_URI", "ELASTICSEARCH_NODE", "CLICKHOUSE_HOST", "REDIS_URL",
             "RABBITMQ_URL", "REPORTS_DIR", "EXPORTS_DIR", "RETENTION_DAYS", "BATCH_SIZE",
             "PROCESSING_INTERVAL", "STREAM_BUFFER_SIZE")
OWN_VARS = ("GRPC_PORT", "DATA_DIR", "LOG_LEVEL", "SHUTDOWN_GRACE_MS", "DEFAULT_ACCOUNT_ID")
QUICK_EXIT_S = 5.0


def run_once(env_extra, args=(), timeout=QUICK_EXIT_S):
    """Runs the binary to completion; returns (returncode or None on timeout, out, err, secs)."""
    workdir = tempfile.mkdtemp(prefix="ana-cfg-")
    env = harness.base_env({
        "GRPC_HOST": "127.0.0.1",
        "GRPC_PORT": harness.free_port(),
        "PORT": harness.free_port(),
        "DATA_DIR": os.path.join(workdir, "data"),
        "LOG_LEVEL": "debug",
    })
    env.update({k: str(v) for k, v in env_extra.items()})
    t0 = time.monotonic()
    proc = subprocess.Popen([harness.require_binary()] + list(args), env=env, cwd=workdir,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rc = None
    finally:
        if not os.environ.get("ANA_TEST_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), \
        time.monotonic() - t0


class BadValueTest(unittest.TestCase):

    def assertRejected(self, name, value):
        rc, out, err, secs = run_once({name: value})
        self.assertIsNotNone(rc, "%s=%s: still running after %.0f s" % (name, value, QUICK_EXIT_S))
        self.assertNotEqual(rc, 0, "%s=%s: exit code 0" % (name, value))
        self.assertGreater(rc, 0, "%s=%s: killed by signal %d" % (name, value, -rc))
        self.assertIn(name, err, "%s=%s: stderr does not name the variable:\n%s"
                      % (name, value, err))

    def test_grpc_port_not_a_number(self):
        self.assertRejected("GRPC_PORT", "abc")

    def test_retention_days_negative(self):
        self.assertRejected("RETENTION_DAYS", "-1")

    def test_log_level_unknown(self):
        self.assertRejected("LOG_LEVEL", "loud")

    def test_port_out_of_range(self):
        self.assertRejected("PORT", "70000")

    def test_clickhouse_gzip_level_out_of_range(self):
        for value in ("0", "13", "fast"):
            self.assertRejected("CLICKHOUSE_GZIP_LEVEL", value)

    def test_search_index_wait_over_a_minute(self):
        self.assertRejected("SEARCH_INDEX_WAIT", "61s")


class HelpTest(unittest.TestCase):

    def test_help_lists_every_variable(self):
        rc, out, err, _ = run_once({}, args=["--help"])
        self.assertEqual(rc, 0, "--help exit code %s; stderr:\n%s" % (rc, err))
        text = out + err
        for name in SPEC_VARS + OWN_VARS:
            with self.subTest(variable=name):
                self.assertRegex(text, r"(?<![A-Z_])%s(?![A-Z_])" % re.escape(name),
                                 "--help does not list %s" % name)

    def test_help_does_not_start_the_server(self):
        port = harness.free_port()
        rc, _, _, secs = run_once({"GRPC_PORT": port}, args=["--help"])
        self.assertEqual(rc, 0)
        self.assertLess(secs, QUICK_EXIT_S)


class UnsupportedBackendTest(unittest.TestCase):

    def test_mongodb_uri_starts_with_a_warning(self):
        server = harness.start_server(self, env={"MONGODB_URI": "mongodb://localhost:27017"})
        lines = server.log_lines()
        warns = [l for l in lines if l.get("level") == "warn"
                 and re.search(r"mongo", json.dumps(l), re.I)
                 and re.search(r"not (yet )?supported", json.dumps(l), re.I)]
        self.assertTrue(warns, "no warn line about MONGODB_URI being unsupported:\n%s"
                        % server.stderr()[-4000:])
        self.assertEqual(server.stop(), 0)


def json_lines_or_fail(test, err):
    """Every stderr line parsed as a JSON object (the test fails on raw text)."""
    lines = []
    for line in err.splitlines():
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except ValueError:
            test.fail("a stderr line is not JSON: %r" % line[:300])
    return lines


class StartupFailureTest(unittest.TestCase):

    def assertPortInUse(self, var):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            rc, _, err, _ = run_once({var: port})
        self.assertEqual(rc, 1, "%s busy: exit %s (a negative code is a signal); stderr:\n%s"
                         % (var, rc, err[-3000:]))
        lines = json_lines_or_fail(self, err)
        failed = [l for l in lines if l.get("msg") == "start-up failed"]
        self.assertEqual(len(failed), 1, err[-3000:])
        self.assertIn("%s %d" % (var, port), failed[0]["error"])
        self.assertIn("already in use", failed[0]["error"])

    def test_busy_rest_port_exits_1_with_a_clear_message(self):
        self.assertPortInUse("PORT")

    def test_busy_grpc_port_exits_1_with_a_clear_message(self):
        self.assertPortInUse("GRPC_PORT")

    def test_every_bad_variable_is_listed(self):
        rc, _, err, _ = run_once({"GRPC_PORT": "x", "RETENTION_DAYS": "-1", "LOG_LEVEL": "loud"})
        self.assertEqual(rc, 2, err)
        for name in ("GRPC_PORT", "RETENTION_DAYS", "LOG_LEVEL"):
            self.assertIn(name, err)


class LogFormatTest(unittest.TestCase):

    def test_grpc_core_lines_are_json(self):
        # gRPC core logs through gpr_log; with GRPC_VERBOSITY=debug and a tracer on it writes
        # many lines, which must come out as our JSON lines (component "grpc").
        server = harness.start_server(self, env={"GRPC_VERBOSITY": "debug",
                                                 "GRPC_TRACE": "server_channel",
                                                 "LOG_LEVEL": "debug"})
        ns = stubs.load()
        ch = server.channel()
        ns.health_pb2_grpc.HealthStub(ch).Check(ns.health_pb2.HealthCheckRequest(), timeout=5)
        ch.close()
        self.assertEqual(server.stop(), 0)
        lines = json_lines_or_fail(self, "\n".join(server.raw_log_lines()))
        core = [l for l in lines if l.get("component") == "grpc"]
        self.assertTrue(core, "no gRPC core line in the log")
        for l in core:
            self.assertRegex(l.get("source", ""), r"\.(cc|c|h):\d+$", l)

    def test_every_stderr_line_is_structured_json(self):
        ns = stubs.load()
        server = harness.start_server(self)
        ch = server.channel()
        ns.health_pb2_grpc.HealthStub(ch).Check(ns.health_pb2.HealthCheckRequest(), timeout=5)
        try:
            ch.unary_unary("/analytics.v1.MetricService/GetMetric")(b"", timeout=5)
        except grpc.RpcError:
            pass
        try:
            ch.unary_unary("/no.Such/Thing")(b"", timeout=5)
        except grpc.RpcError:
            pass
        rc = server.stop()
        self.assertEqual(rc, 0)
        raw = server.raw_log_lines()
        self.assertTrue(raw, "nothing logged")
        bad = []
        for i, line in enumerate(raw, 1):
            try:
                obj = json.loads(line)
            except ValueError as e:
                bad.append("line %d is not JSON (%s): %r" % (i, e, line[:300]))
                continue
            if not isinstance(obj, dict):
                bad.append("line %d is not an object: %r" % (i, line[:300]))
                continue
            missing = [k for k in ("ts", "level", "component", "msg") if k not in obj]
            if missing:
                bad.append("line %d lacks %s: %s" % (i, missing, line[:300]))
            elif obj["level"] not in harness.LOG_LEVELS:
                bad.append("line %d has level %r: %s" % (i, obj["level"], line[:300]))
            elif not isinstance(obj["msg"], str) or not obj["component"]:
                bad.append("line %d has a bad msg or component: %s" % (i, line[:300]))
        if bad:
            self.fail("%d of %d lines are not structured log lines:\n%s"
                      % (len(bad), len(raw), "\n".join(bad[:10])))


if __name__ == "__main__":
    unittest.main()
