#!/usr/bin/python3
"""Real-time latency at default settings: from the start of a TrackEvent call
to the first frame that includes the event, on every kind of live
subscriber, while 1,000 events/s are tracked over REST and gRPC.

A fresh analyticsd runs with no configuration beyond its ports. Four loaders
track 1,000 events/s in all (two over gRPC TrackEvent, two over REST
POST /api/events, keep-alive), each with `probe: 0`. A probe thread tracks,
every 50 ms, one event named `probe` with `probe: 1`, alternately over gRPC
and REST, one at a time. Subscribers:
  - gRPC StreamMetric and WebSocket /ws/metrics/{id} on a metric
    `sum(*.probe)`: every event of the load changes the metric's group (so the
    stream's coalescing, METRIC_STREAM_INTERVAL, is at work), and its value
    counts the probes; probe k is in the first update whose value reaches k;
  - gRPC StreamAnalytics and WebSocket /ws/analytics with includeEvents and
    eventName=probe: probe k is in the frame carrying its eventId.
Prints the p50 / p99 / max per subscriber and replaces its section of
bench/RESULTS.md.

Usage: /usr/bin/python3 bench/realtime_latency_bench.py [--binary build/server/analyticsd]
       [--seconds 20] [--rate 1000] [--out bench/RESULTS.md]
"""

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
import stubs  # noqa: E402
import websockets  # noqa: E402

from metric_stream_bench import replace_section  # noqa: E402

PROBE_EVERY_S = 0.05
LOADERS = (("grpc", 2), ("rest", 2))


class Arrivals:
    """What a subscriber saw: metric values (time, bucket, value) or event ids
    (time by id), appended by its reader thread."""

    def __init__(self, name):
        self.name = name
        self.values = []  # (perf_counter, bucket_start, value)
        self.events = {}  # event id -> perf_counter
        self.error = None

    def counted_times(self):
        """For each metric update: (time, probes counted so far), summing the
        latest value of every bucket seen (a day's rollover restarts at 0)."""
        latest, out = {}, []
        for t, bucket, value in self.values:
            latest[bucket] = max(latest.get(bucket, 0), value)
            out.append((t, sum(latest.values())))
        return out


def rest_conn(port):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=10)


def rest_track(conn, event):
    conn.request("POST", "/api/events", body=json.dumps(event),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError("POST /api/events answered %d %r" % (resp.status, body[:200]))


def grpc_track(stub, epb, event_id, name, probe):
    ev = epb.Event(event_id=event_id, event_type="bench", event_name=name)
    ev.properties.update({"probe": probe})
    stub.TrackEvent(epb.TrackEventRequest(event=ev), timeout=10)


def loader(kind, rate, stop, server, ns, counts, idx):
    epb, egrpc = ns.analytics["events"]
    stub = egrpc.EventServiceStub(server.channel())
    conn = rest_conn(server.rest_port) if kind == "rest" else None
    period, nxt = 1.0 / rate, time.perf_counter()
    while not stop.is_set():
        eid = uuid.uuid4().hex
        if kind == "grpc":
            grpc_track(stub, epb, eid, "load", 0)
        else:
            rest_track(conn, {"eventId": eid, "eventType": "bench", "eventName": "load",
                              "properties": {"probe": 0}})
        counts[idx] += 1
        nxt += period
        delay = nxt - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


def grpc_readers(server, ns, metric_id, stop):
    rpb, rgrpc = ns.analytics["realtime"]
    stub = rgrpc.RealtimeServiceStub(server.channel())
    metric, events = Arrivals("gRPC StreamMetric"), Arrivals("gRPC StreamAnalytics")

    def read_metric():
        try:
            for u in stub.StreamMetric(rpb.StreamMetricRequest(metric_id=metric_id, interval="1d",
                                                               time_zone="UTC"), timeout=3600):
                if u.HasField("value"):
                    metric.values.append((time.perf_counter(), u.bucket_start.seconds,
                                          u.value.value))
        except Exception as e:  # the call is cancelled at the end
            if not stop.is_set():
                metric.error = repr(e)

    def read_events():
        try:
            for u in stub.StreamAnalytics(rpb.StreamAnalyticsRequest(event_name="probe",
                                                                     include_events=True),
                                          timeout=3600):
                if u.HasField("event"):
                    events.events[u.event.event_id] = time.perf_counter()
        except Exception as e:
            if not stop.is_set():
                events.error = repr(e)

    for f in (read_metric, read_events):
        threading.Thread(target=f, daemon=True).start()
    return metric, events


def websocket_readers(port, metric_id, stop, ready):
    metric, events = Arrivals("WebSocket /ws/metrics/{id}"), Arrivals("WebSocket /ws/analytics")

    async def read(path, into, on_result):
        try:
            async with websockets.connect("ws://127.0.0.1:%d%s" % (port, path),
                                          max_size=None) as ws:
                ready.release()
                while not stop.is_set():
                    try:
                        frame = await asyncio.wait_for(ws.recv(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    t = time.perf_counter()
                    result = json.loads(frame).get("result")
                    if result is not None:
                        on_result(t, result)
        except Exception as e:
            if not stop.is_set():
                into.error = repr(e)
            ready.release()

    def on_metric(t, r):
        if r.get("value") is not None:
            metric.values.append((t, r["bucketStart"], float(r["value"])))

    def on_event(t, r):
        if "event" in r:
            events.events[r["event"]["eventId"]] = t

    async def both():
        await asyncio.gather(
            read("/ws/metrics/%s?interval=1d&timeZone=UTC" % metric_id, metric, on_metric),
            read("/ws/analytics?eventName=probe&includeEvents=true", events, on_event))

    threading.Thread(target=lambda: asyncio.run(both()), daemon=True).start()
    return metric, events


def percentiles(lat):
    lat = sorted(lat)
    return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=os.path.join(HERE, "..", "build", "server", "analyticsd"))
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--rate", type=float, default=1000, help="load events/s in all")
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    a = p.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(a.binary)
    ns = stubs.load()
    server = harness.Server(log_level="warn")
    server.start()
    stop = threading.Event()
    try:
        mpb, mgrpc = ns.analytics["metrics"]
        epb, egrpc = ns.analytics["events"]
        m = mgrpc.MetricServiceStub(server.channel()).CreateMetric(mpb.CreateMetricRequest(
            metric=mpb.Metric(name="probes-%s" % uuid.uuid4().hex, formula="sum(*.probe)")),
            timeout=10)
        subscribers = list(grpc_readers(server, ns, m.metric_id, stop))
        ready = threading.Semaphore(0)
        subscribers += websocket_readers(server.rest_port, m.metric_id, stop, ready)
        for _ in range(2):
            if not ready.acquire(timeout=10):
                raise SystemExit("a WebSocket subscriber did not connect")
        time.sleep(0.5)

        counts = [0] * sum(n for _, n in LOADERS)
        threads, i = [], 0
        per_loader = a.rate / len(counts)
        for kind, n in LOADERS:
            for _ in range(n):
                threads.append(threading.Thread(target=loader, daemon=True, args=(
                    kind, per_loader, stop, server, ns, counts, i)))
                i += 1
        for t in threads:
            t.start()
        time.sleep(2)  # warm-up under load

        stub = egrpc.EventServiceStub(server.channel())
        conn = rest_conn(server.rest_port)
        probes = []  # (t0, event id)
        t_load0, load0 = time.perf_counter(), sum(counts)
        end = time.perf_counter() + a.seconds
        while time.perf_counter() < end:
            eid = uuid.uuid4().hex
            t0 = time.perf_counter()
            if len(probes) % 2 == 0:
                grpc_track(stub, epb, eid, "probe", 1)
            else:
                rest_track(conn, {"eventId": eid, "eventType": "bench", "eventName": "probe",
                                  "properties": {"probe": 1}})
            probes.append((t0, eid))
            time.sleep(max(0.0, t0 + PROBE_EVERY_S - time.perf_counter()))
        load_rate = (sum(counts) - load0) / (time.perf_counter() - t_load0)
        time.sleep(1)  # the last probes' frames
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        stop.set()
        server.stop()
        server.cleanup()

    rows = []
    for sub in subscribers:
        if sub.error:
            raise SystemExit("%s failed: %s" % (sub.name, sub.error))
        lat, missing = [], 0
        if sub.values or not sub.events:
            counted = sub.counted_times()
            j = 0
            for k, (t0, _) in enumerate(probes, start=1):
                while j < len(counted) and counted[j][1] < k:
                    j += 1
                if j == len(counted):
                    missing += 1
                else:
                    lat.append((counted[j][0] - t0) * 1000)
        else:
            for t0, eid in probes:
                if eid in sub.events:
                    lat.append((sub.events[eid] - t0) * 1000)
                else:
                    missing += 1
        if missing:
            raise SystemExit("%s: %d of %d probes never arrived" % (sub.name, missing,
                                                                    len(probes)))
        p50, p99, mx = percentiles(lat)
        rows.append("| %s: TrackEvent call to the first frame with the event, p50 / p99 / max "
                    "(%d probes) | %.1f / %.1f / %.1f ms | | | p99 < 50 ms |\n"
                    % (sub.name, len(lat), p50, p99, mx))
    heading = "## Real time at default settings"
    section = ("%s\n\nMachine as in the other sections; client and server share the machine. "
               "Command: `/usr/bin/python3 bench/realtime_latency_bench.py` (%.0f s). A fresh "
               "analyticsd with no settings but its ports; %.0f events/s tracked (achieved: %.0f) "
               "by two gRPC TrackEvent and two REST `POST /api/events` loaders; every 50 ms a "
               "probe event, alternately over gRPC and REST. Metric subscribers watch "
               "`sum(*.probe)`, which every event of the load changes, so the stream's "
               "coalescing (`METRIC_STREAM_INTERVAL`) is at work; event subscribers use "
               "`includeEvents` and `eventName=probe`.\n\n"
               "| Measure | Result | Baseline | Ratio | Target |\n"
               "|---|---|---|---|---|\n%s"
               % (heading, a.seconds, a.rate, load_rate, "".join(rows)))
    replace_section(a.out, heading, section)
    print(section)


if __name__ == "__main__":
    main()
