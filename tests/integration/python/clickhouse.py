"""A throwaway clickhouse-server for tests, and a fault proxy in front of it.

ClickHouse(): a real clickhouse-server (Debian's 18.16) on loopback, with its
own temporary config, data directory and free ports (never the system
service). FaultProxy(ch): an HTTP proxy to it that can answer errors, hold
inserts' answers past a timeout, or refuse connections.
"""

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import harness

SERVER_BIN = shutil.which("clickhouse-server") or "/usr/bin/clickhouse-server"

CONFIG = """<yandex>
 <logger><level>warning</level><log>{dir}/server.log</log><errorlog>{dir}/error.log</errorlog>
  <console>0</console></logger>
 <http_port>{http}</http_port><tcp_port>{tcp}</tcp_port>
 <listen_host>127.0.0.1</listen_host>
 <path>{dir}/data/</path><tmp_path>{dir}/tmp/</tmp_path>
 <users_config>{dir}/users.xml</users_config>
 <default_profile>default</default_profile><default_database>default</default_database>
 <mark_cache_size>5368709</mark_cache_size>
 <max_concurrent_queries>50</max_concurrent_queries>{query_log}
</yandex>
"""

QUERY_LOG = """
 <query_log><database>system</database><table>query_log</table>
  <flush_interval_milliseconds>500</flush_interval_milliseconds></query_log>"""

USERS = """<yandex>
 <profiles><default>{log_queries}</default></profiles>
 <users>
  <default><password></password><networks><ip>127.0.0.1</ip></networks>
   <profile>default</profile><quota>default</quota></default>
  <ana><password>{password}</password><networks><ip>127.0.0.1</ip></networks>
   <profile>default</profile><quota>default</quota></ana>
 </users>
 <quotas><default></default></quotas>
</yandex>
"""


def available():
    return os.access(SERVER_BIN, os.X_OK)


class ClickHouse:
    """One clickhouse-server process; start() again after stop()/kill() keeps its data."""

    PASSWORD = "s3cret pass"

    def __init__(self, query_log=False):
        """query_log: every query logged in system.query_log (for benchmarks)."""
        self.dir = tempfile.mkdtemp(prefix="ana-ch-")
        self.http_port = harness.free_port()
        self.tcp_port = harness.free_port()
        while self.tcp_port == self.http_port:
            self.tcp_port = harness.free_port()
        with open(os.path.join(self.dir, "config.xml"), "w") as f:
            f.write(CONFIG.format(dir=self.dir, http=self.http_port, tcp=self.tcp_port,
                                  query_log=QUERY_LOG if query_log else ""))
        with open(os.path.join(self.dir, "users.xml"), "w") as f:
            f.write(USERS.format(password=self.PASSWORD,
                                 log_queries="<log_queries>1</log_queries>" if query_log else ""))
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.http_port

    def start(self, timeout=30):
        self.proc = subprocess.Popen(
            [SERVER_BIN, "--config-file", os.path.join(self.dir, "config.xml")], cwd=self.dir,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("clickhouse-server exited: %s" % self.log_tail())
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1) as r:
                    if r.read().startswith(b"Ok"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("clickhouse-server did not answer /ping: %s" % self.log_tail())

    def log_tail(self):
        try:
            with open(os.path.join(self.dir, "error.log")) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, sql, timeout=30):
        req = urllib.request.Request(self.url + "/", data=sql.encode())
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read().decode()

    def rows(self, sql):
        out = self.query(sql + " FORMAT TabSeparated")
        return [line.split("\t") for line in out.splitlines()]


class FaultProxy:
    """HTTP/1.1 proxy to a ClickHouse, one request per connection.

    mode "pass": forward; "error": answer inserts 500 without forwarding;
    "hold": forward inserts, then keep their answer for hold_s (past the
    client's timeout); "down": refuse every request (close at once);
    "late": hold the next insert for hold_s before forwarding it (an insert
    ClickHouse received but only runs after the client gave up on it and
    checked), then pass; late_done is set once it was forwarded; "slow_setup":
    hold the next CREATE DATABASE (the start of a server's set-up) for hold_s
    before forwarding it, then pass.
    """

    def __init__(self, ch):
        self.ch = ch
        self.mode = "pass"
        self.hold_s = 3.0
        self.inserts = 0
        self.encodings = []  # the Content-Encoding of each insert into events ("": none)
        self.insert_bytes = 0  # the bodies of the inserts into events, as sent
        self.late_done = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.stopped = True
        self.sock.close()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _read_request(f):
        line = f.readline()
        if not line:
            return None
        headers = {}
        while True:
            h = f.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        body = f.read(int(headers.get("content-length", "0")))
        method, path, _ = line.decode("latin-1").split(" ", 2)
        return method, path, headers, body

    def _serve(self, c):
        try:
            f = c.makefile("rb")
            while True:
                req = self._read_request(f)
                if not req:
                    return
                method, path, headers, body = req
                query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query).get("query", [""])
                insert = query[0].upper().startswith("INSERT")
                if insert and query[0].upper().startswith("INSERT INTO EVENTS"):
                    self.encodings.append(headers.get("content-encoding", ""))
                    self.insert_bytes += len(body)
                mode = self.mode
                if mode == "down":
                    return
                if mode == "slow_setup" and (query[0] or body.decode("latin-1")).upper(
                        ).startswith("CREATE DATABASE"):
                    self.mode = "pass"
                    time.sleep(self.hold_s)
                late = insert and mode == "late"
                if late:
                    self.mode = "pass"
                    time.sleep(self.hold_s)
                if insert and mode == "error":
                    msg = b"Code: 999, e.displayText() = injected failure\n"
                    c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n"
                              b"Connection: close\r\n\r\n%s" % (len(msg), msg))
                    return
                conn = http.client.HTTPConnection("127.0.0.1", self.ch.http_port, timeout=60)
                fwd = {k: v for k, v in headers.items()
                       if k in ("authorization", "content-encoding", "content-type")}
                conn.request(method, path, body=body, headers=fwd)
                r = conn.getresponse()
                data = r.read()
                conn.close()
                if late:
                    self.late_done.set()
                    return
                if insert:
                    self.inserts += 1
                    if mode == "hold":
                        time.sleep(self.hold_s)
                c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                          % (r.status, len(data), data))
                return
        except OSError:
            pass
        finally:
            c.close()
