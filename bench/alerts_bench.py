#!/usr/bin/python3
"""Alerts: how long from TrackEvent returning ACCEPTED for the event that
crosses a threshold until a local webhook sink receives the notification's
POST (beside a plain loopback POST to the same sink), and the sustained
TrackEvents rate (4 clients, batches of 100) with 10,000 alert rules over
100 metrics of 10 groups each against the same load with no rules (two
servers, load phases alternating between them; with the server's CPU per
event). Starts its own analyticsd on fresh data directories and replaces its
section of bench/RESULTS.md.

Usage: /usr/bin/python3 bench/alerts_bench.py [--binary build/server/analyticsd]
       [--samples 200] [--rules 10000] [--seconds 3] [--rounds 7]
       [--out bench/RESULTS.md]
"""

import argparse
import http.client
import http.server
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import harness  # noqa: E402
import stubs  # noqa: E402
from metric_stream_bench import replace_section  # noqa: E402


class Sink:
    """A loopback HTTP server noting when each POST arrived (by its path)."""

    def __init__(self):
        self.arrived = {}
        self.cond = threading.Condition()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                t = time.perf_counter()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink.cond:
                    sink.arrived.setdefault(self.path, (t, body))
                    sink.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait(self, path, timeout=10):
        deadline = time.time() + timeout
        with self.cond:
            while path not in self.arrived:
                left = deadline - time.time()
                if left <= 0:
                    raise SystemExit("no POST to %s" % path)
                self.cond.wait(left)
            return self.arrived[path][0]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def alert_msg(apb, name, metric, threshold, channels):
    a = apb.Alert(name=name, metric=metric, threshold=threshold, severity="critical",
                  channels=channels)
    a.condition.struct_value.update({"type": "threshold", "op": ">=", "window": "1m"})
    a.cooldown.value = 0
    return a


def latency(ns, binary, samples):
    sink = Sink()
    server = harness.Server(env={"NOTIFY_ALLOW_PRIVATE_NETWORKS": "true"}, log_level="warn")
    server.start()
    try:
        ch = server.channel()
        mpb, mgrpc = ns.analytics["metrics"]
        epb, egrpc = ns.analytics["events"]
        apb, agrpc = ns.analytics["alerts"]
        cpb, cgrpc = ns.analytics["channels"]
        metrics, events = mgrpc.MetricServiceStub(ch), egrpc.EventServiceStub(ch)
        alerts, channels = agrpc.AlertServiceStub(ch), cgrpc.ChannelServiceStub(ch)
        lat = []
        for i in range(samples):
            name = "lat%d" % i
            metrics.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
                name=name, formula="count(%s)" % name)), timeout=10)
            hook = channels.CreateChannel(cpb.CreateChannelRequest(channel=cpb.Channel(
                name=name, webhook=cpb.WebhookChannel(
                    url="http://127.0.0.1:%d/%s" % (sink.port, name)))), timeout=10)
            alerts.CreateAlert(apb.CreateAlertRequest(alert=alert_msg(
                apb, name, name, 1, [hook.channel_id])), timeout=10)
            resp = events.TrackEvent(epb.TrackEventRequest(
                event=epb.Event(event_type="bench", event_name=name)), timeout=10)
            t0 = time.perf_counter()
            if resp.result.status != epb.EventResult.ACCEPTED:
                raise SystemExit("TrackEvent: %s" % resp)
            lat.append((sink.wait("/" + name) - t0) * 1000)
        # the baseline: a plain POST over loopback to the same sink
        base = []
        conn = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
        for i in range(samples):
            path = "/plain%d" % i
            t0 = time.perf_counter()
            conn.request("POST", path, body=b'{"plain":true}',
                         headers={"Content-Type": "application/json"})
            conn.getresponse().read()
            base.append((sink.arrived[path][0] - t0) * 1000)
        conn.close()
    finally:
        server.stop()
        server.cleanup()
        sink.httpd.shutdown()
    return lat, base


def loaded_server(ns, n_rules):
    """A fresh analyticsd with 100 metrics of 10 groups and n_rules rules over
    them (thresholds no window reaches: evaluated, never firing); returns it
    and the seconds the rules took to create."""
    mpb, mgrpc = ns.analytics["metrics"]
    apb, agrpc = ns.analytics["alerts"]
    server = harness.Server(log_level="warn")
    server.start()
    ch = server.channel()
    metrics, alerts = mgrpc.MetricServiceStub(ch), agrpc.AlertServiceStub(ch)
    for m in range(100):
        metrics.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
            name="tp%d" % m, formula="count(tp%d)" % m, dimensions=["g"])), timeout=30)
    t0 = time.time()
    for r in range(n_rules):
        alerts.CreateAlert(apb.CreateAlertRequest(alert=alert_msg(
            apb, "r%d" % r, "tp%d" % (r % 100), 1e12 + r, [])), timeout=30)
    return server, time.time() - t0


def server_cpu_ms(server):
    f = open("/proc/%d/stat" % server.proc.pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")


def load_phase(server, batches, seconds):
    """TrackEvents from 4 clients for one second of warm-up and `seconds`
    measured: the rate (ev/s) and the server's CPU ms per 1000 events."""
    path = "/analytics.v1.EventService/TrackEvents"
    done, total = [0] * 4, [0] * 4
    cpu0, t0 = server_cpu_ms(server), time.perf_counter()
    start = t0 + 1
    stop = start + seconds

    def client(k):
        c = server.channel()
        call = c.unary_unary(path, request_serializer=None, response_deserializer=None)
        i = k
        while True:
            now = time.perf_counter()
            if now >= stop:
                break
            call(batches[i % len(batches)], timeout=30)
            i += 1
            total[k] += 100
            if now >= start:
                done[k] += 100
        c.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = server_cpu_ms(server) - cpu0
    return sum(done) / seconds, cpu / max(sum(total) / 1000.0, 1e-9)


def throughput(ns, n_rules, seconds, rounds):
    """The TrackEvents rate with n_rules rules against none: two servers set up
    alike but for the rules, load phases alternating between them (rounds
    pairs, the order swapped each round) so that both see the same machine.
    Returns the per-round (none rate, rules rate, none cpu, rules cpu) and the
    rules' creation time."""
    epb, _ = ns.analytics["events"]
    rnd = random.Random(7)
    batches = []
    for b in range(20):
        req = epb.TrackEventsRequest()
        for _ in range(100):
            e = req.events.add(event_type="bench", event_name="tp%d" % rnd.randrange(100))
            e.properties.update({"g": "g%d" % rnd.randrange(10)})
        batches.append(req.SerializeToString())
    none, _ = loaded_server(ns, 0)
    ruled = None
    try:
        ruled, setup_s = loaded_server(ns, n_rules)
        out = []
        for k in range(rounds):
            if k % 2 == 0:
                a = load_phase(none, batches, seconds)
                b = load_phase(ruled, batches, seconds)
            else:
                b = load_phase(ruled, batches, seconds)
                a = load_phase(none, batches, seconds)
            out.append((a[0], b[0], a[1], b[1]))
        return out, setup_s
    finally:
        for server in (none, ruled):
            if server:
                server.stop()
                server.cleanup()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=os.path.join(HERE, "..", "build", "server", "analyticsd"))
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--rules", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=3)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    a = p.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(a.binary)
    ns = stubs.load()
    lat, base = latency(ns, a.binary, a.samples)
    rounds, setup_s = throughput(ns, a.rules, a.seconds, a.rounds)
    med = statistics.median
    plain, ruled = med(r[0] for r in rounds), med(r[1] for r in rounds)
    ratio = med(r[1] / r[0] for r in rounds)
    cpu_ratio = med(r[3] / r[2] for r in rounds)
    rows = [
        "| TrackEvent ACCEPTED (the event crossing the threshold) to the webhook sink receiving"
        " the POST, p50 / p99 (%d alerts, one crossing each, sequential) | %.2f / %.2f ms"
        " | plain loopback POST p99 %.2f ms | %.1f | p99 <= 50 ms |"
        % (len(lat), pct(lat, 0.5), pct(lat, 0.99), pct(base, 0.99),
           pct(lat, 0.99) / max(pct(base, 0.99), 1e-9)),
        "| gRPC TrackEvents, batches of 100 (4 clients), %d rules over 100 metrics of 10 groups"
        " (created in %.1f s); median of %d alternating %g s phases (ratios %s) | %.0f ev/s"
        " | no rules: %.0f ev/s | %.2f | >= 0.9 |"
        % (a.rules, setup_s, len(rounds), a.seconds,
           ", ".join("%.2f" % (r[1] / r[0]) for r in rounds), ruled, plain, ratio),
        "| analyticsd CPU per 1000 events in the same phases, %d rules against none (ratios %s)"
        " | %.1f ms | no rules: %.1f ms | %.2f | |"
        % (a.rules, ", ".join("%.2f" % (r[3] / r[2]) for r in rounds),
           med(r[3] for r in rounds), med(r[2] for r in rounds), cpu_ratio),
    ]
    heading = "## Alerts (`bench/alerts_bench.py`)"
    load = os.getloadavg()[0]
    section = ("%s\n\nMachine: %d CPUs, Linux %s (1-minute load average %.1f at the end: other"
               " work on the machine shows in every figure); client (Python grpcio, pre-serialised"
               " batches),"
               " analyticsd and the webhook sink (Python http.server) share the machine; each"
               " part runs on a fresh analyticsd and store; the rate with rules and without is"
               " measured on two servers in alternating phases, so that both see the same load. Notifications go through the outbox"
               " (written in the state change's transaction) and the sender threads.\n\n"
               "| Measure | Result | Baseline | Ratio | Target |\n"
               "|---|---|---|---|---|\n%s\n" % (heading, os.cpu_count(), platform.release(), load,
                                                  "\n".join(rows)))
    replace_section(a.out, heading, section)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
