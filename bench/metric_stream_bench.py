#!/usr/bin/python3
"""Ingest-to-metric-update latency: how long from a TrackEvent call until the
metric stream's subscriber (gRPC StreamMetric, METRIC_STREAM_INTERVAL=0) has
the new value. Starts its own analyticsd on a fresh data directory and
replaces its section of bench/RESULTS.md.

Usage: /usr/bin/python3 bench/metric_stream_bench.py [--binary build/server/analyticsd]
       [--events 2000] [--out bench/RESULTS.md]
"""

import argparse
import os
import statistics
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))
sys.dont_write_bytecode = True

import harness  # noqa: E402
import stubs  # noqa: E402


def replace_section(path, heading, section):
    """Replaces this benchmark's section of RESULTS.md (up to the next heading),
    or appends it, keeping the other benchmarks' sections."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        ends = [i for i in (text.find("\n## ", start + 1), text.find("\n# ", start + 1)) if i >= 0]
        end = min(ends) if ends else len(text)
        text = text[:start] + section + text[end:]
    with open(path, "w") as f:
        f.write(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", default=os.path.join(HERE, "..", "build", "server", "analyticsd"))
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    a = p.parse_args()
    os.environ["ANALYTICSD"] = os.path.abspath(a.binary)
    ns = stubs.load()
    server = harness.Server(env={"METRIC_STREAM_INTERVAL": "0"}, log_level="warn")
    server.start()
    try:
        ch = server.channel()
        mpb, mgrpc = ns.analytics["metrics"]
        epb, egrpc = ns.analytics["events"]
        rpb, rgrpc = ns.analytics["realtime"]
        metrics, events = mgrpc.MetricServiceStub(ch), egrpc.EventServiceStub(ch)
        m = metrics.CreateMetric(mpb.CreateMetricRequest(metric=mpb.Metric(
            name="bench-%s" % uuid.uuid4().hex, formula="(delivered / sent) * 100",
            dimensions=["campaignId"])), timeout=10)
        reader = harness.StreamReader(rgrpc.RealtimeServiceStub(ch).StreamMetric(
            rpb.StreamMetricRequest(metric_id=m.metric_id), timeout=3600))
        lat, last = [], 0
        for i in range(a.events):
            ev = epb.Event(event_type="bench", event_name="sent" if i % 2 else "delivered")
            ev.properties.update({"campaignId": "c%d" % (i % 10)})
            t0 = time.perf_counter()
            events.TrackEvent(epb.TrackEventRequest(event=ev), timeout=10)
            while True:
                x = reader.next(10)
                if x is None:
                    raise SystemExit("update %d never arrived (%s %s)"
                                     % (i, reader.code, reader.details))
                if x.sequence <= last:
                    raise SystemExit("sequence went back: %d after %d" % (x.sequence, last))
                last = x.sequence
                if not x.final and x.dimensions.get("campaignId") == "c%d" % (i % 10):
                    lat.append((time.perf_counter() - t0) * 1000)
                    break
        reader.cancel()
    finally:
        server.stop()
        server.cleanup()
    lat.sort()
    p50, p99 = statistics.median(lat), lat[int(len(lat) * 0.99)]
    row = ("| ingest-to-metric-update p50 / p99, gRPC StreamMetric subscriber, "
           "METRIC_STREAM_INTERVAL=0 (%d sequential TrackEvent calls, 10 groups; "
           "`bench/metric_stream_bench.py`) | %.2f / %.2f ms | | | p99 <= 10 ms |\n"
           % (len(lat), p50, p99))
    heading = "## Live metric stream"
    section = ("%s\n\nMachine as in the other sections; client and server share the machine.\n\n"
               "| Measure | Result | Baseline | Ratio | Target |\n"
               "|---|---|---|---|---|\n%s" % (heading, row))
    replace_section(a.out, heading, section)
    print(row, end="")


if __name__ == "__main__":
    main()
