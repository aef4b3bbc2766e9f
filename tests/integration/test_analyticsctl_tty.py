"""analyticsctl on a terminal, against a live analyticsd: tables by default
when stdout is a pseudo-terminal (JSON with -o json or through a pipe), and
the progress of `track --stdin` (count, rate, errors) on stderr only when
stderr is a terminal.

Usage: /usr/bin/python3 test_analyticsctl_tty.py ANALYTICSCTL HOST:PORT
(run by test_analyticsctl.sh)."""
import json
import os
import pty
import re
import subprocess
import sys
import tempfile
import threading
import unittest

CTL = TARGET = None
RUN = "tty%d" % os.getpid()


def run(args, stdin_text=None, out_tty=True, err_tty=True, timeout=60):
    """Runs analyticsctl with stdout and/or stderr on their own pseudo-
    terminal (else a pipe). Returns (exit status, stdout, stderr), the
    terminal's \\r\\n turned back into \\n."""
    fds, masters = {}, {}
    for name, tty in (("out", out_tty), ("err", err_tty)):
        if tty:
            masters[name], fds[name] = pty.openpty()
        else:
            fds[name] = subprocess.PIPE
    stdin = subprocess.DEVNULL
    if stdin_text is not None:
        f = tempfile.TemporaryFile()
        f.write(stdin_text.encode())
        f.seek(0)
        stdin = f
    proc = subprocess.Popen([CTL, "--target", TARGET] + args, stdin=stdin,
                            stdout=fds["out"], stderr=fds["err"])
    got = {"out": b"", "err": b""}

    def drain(name, fd):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its side
                return
            if not chunk:
                return
            got[name] += chunk

    threads = []
    for name, m in masters.items():
        os.close(fds[name])
        t = threading.Thread(target=drain, args=(name, m))
        t.start()
        threads.append(t)
    for name in ("out", "err"):
        if name not in masters:
            t = threading.Thread(
                target=lambda n=name: got.__setitem__(
                    n, getattr(proc, "std" + n).read()))
            t.start()
            threads.append(t)
    rc = proc.wait(timeout=timeout)
    if stdin is not subprocess.DEVNULL:
        stdin.close()
    for t in threads:
        t.join(timeout)
    for m in masters.values():
        os.close(m)
    for name in ("out", "err"):
        if name not in masters:
            getattr(proc, "std" + name).close()
    return (rc, got["out"].decode().replace("\r\n", "\n"),
            got["err"].decode().replace("\r\n", "\n"))


def lines_of(text):
    return [line.rstrip() for line in text.split("\n") if line.strip()]


class TableOnATerminal(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rc, out, err = run(["track", "message", RUN + "_tbl",
                            "campaignId=tbl", "chars:=150",
                            "--session", "s-" + RUN], out_tty=False)
        assert rc == 0, (out, err)
        cls.event_id = json.loads(out)["eventId"]

    def test_track_summary_is_key_value_lines(self):
        rc, out, err = run(["track", "message", RUN + "_tbl2", "k=v"])
        self.assertEqual(rc, 0, err)
        self.assertFalse(out.lstrip().startswith("{"), out)
        self.assertRegex(out, r"(?m)^accepted\s+1$")
        self.assertRegex(out, r"(?m)^eventId\s+\S+$")

    def test_search_is_a_table(self):
        rc, out, err = run(["search", "--name", RUN + "_tbl", "--limit", "5"])
        self.assertEqual(rc, 0, err)
        rows = lines_of(out)
        self.assertRegex(rows[0], r"^TIMESTAMP\s+EVENTTYPE\s+EVENTNAME\s+SESSIONID\s+"
                                  r"PROPERTIES\s+EVENTID$")
        self.assertIn(self.event_id, rows[1])
        self.assertIn("s-" + RUN, rows[1])
        self.assertIn('{"campaignId":"tbl","chars":150}', rows[1])
        # The columns line up: each header starts where its cells start.
        col = rows[0].index("EVENTNAME")
        self.assertEqual(rows[1][col:col + len(RUN) + 4], RUN + "_tbl")

    def test_metrics_list_is_a_table(self):
        name = "tty metric " + RUN
        rc, out, err = run(["metrics", "create", "--name", name,
                            "--formula", "count(%s_tbl)" % RUN], out_tty=False)
        self.assertEqual(rc, 0, err)
        rc, out, err = run(["metrics", "list", "--all"])
        self.assertEqual(rc, 0, err)
        rows = lines_of(out)
        self.assertRegex(rows[0], r"^METRICID\s+NAME\s+TYPE\s+FORMULA")
        self.assertTrue(any(name in r for r in rows[1:]), out)

    def test_metric_data_is_a_row_per_bucket(self):
        rc, out, err = run(["metrics", "create", "--name", "tty data " + RUN,
                            "--formula", "count(%s_tbl)" % RUN, "--type", "counter",
                            "--aggregation", "sum", "--dimension", "campaignId"],
                           out_tty=False)
        self.assertEqual(rc, 0, err)
        metric_id = json.loads(out)["metricId"]
        rc, out, err = run(["metrics", "data", metric_id, "--from", "-1h", "--interval", "5m"])
        self.assertEqual(rc, 0, err)
        rows = lines_of(out)
        self.assertRegex(rows[0], r"^SERIES\s+START\s+VALUE\s+RATE$")
        self.assertTrue(any(re.match(r"campaignId=tbl\s+\S+Z\s+1(\s|$)", r) for r in rows),
                        out)
        self.assertTrue(any(re.match(r"^SERIES\s+SUMMARY\s+TOTAL", r) for r in rows), out)
        self.assertTrue(all(r == r.rstrip() for r in out.split("\n")), "trailing blanks")

    def test_dash_o_json_on_a_terminal(self):
        rc, out, err = run(["-o", "json", "search", "--name", RUN + "_tbl"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["events"][0]["eventId"], self.event_id)
        rc, out, err = run(["search", "--name", RUN + "_tbl", "--output", "json"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["events"][0]["eventId"], self.event_id)

    def test_dash_o_table_through_a_pipe(self):
        rc, out, err = run(["-o", "table", "health"], out_tty=False)
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^status\s+SERVING\n$")

    def test_bad_dash_o_is_a_usage_error(self):
        rc, out, err = run(["-o", "yaml", "health"])
        self.assertEqual(rc, 2)
        self.assertIn("json or table", err)


def events_text(n, bad=0):
    lines = [json.dumps({"eventType": "bulk", "eventName": RUN + "_bulk",
                         "properties": {"i": i}}) for i in range(n)]
    for k in range(bad):
        lines.insert(1 + k * 7, "not json %d" % k)
    return "\n".join(lines) + "\n"


PROGRESS = re.compile(r"(\d+) events, (\d+)/s, (\d+) errors?, ([\d.]+)s")


class ProgressOnATerminal(unittest.TestCase):
    def test_track_stdin_shows_count_rate_errors(self):
        rc, out, err = run(["track", "--stdin"], stdin_text=events_text(3000, bad=2),
                           out_tty=False)
        self.assertEqual(rc, 1, err)  # the bad lines
        self.assertEqual(json.loads(out)["accepted"], 3000)
        # Redrawn in place: carriage return and erase-line.
        self.assertIn("\r\x1b[K", err)
        final = PROGRESS.findall(err)
        self.assertTrue(final, repr(err[-400:]))
        done, rate, errors, secs = final[-1]
        self.assertEqual((int(done), int(errors)), (3000, 2))
        self.assertGreater(int(rate), 0)
        # Each bad line is still named with its number, on its own line.
        self.assertIn("\x1b[Kanalyticsctl: line 2: ", err)

    def test_no_progress_when_stderr_is_not_a_terminal(self):
        rc, out, err = run(["track", "--stdin"], stdin_text=events_text(500),
                           out_tty=True, err_tty=False)
        self.assertEqual(rc, 0, err)
        self.assertNotIn("\r", err)
        self.assertFalse(PROGRESS.search(err), err)
        self.assertRegex(out, r"(?m)^accepted\s+500$")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    CTL, TARGET = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1] + sys.argv[3:], verbosity=2)
