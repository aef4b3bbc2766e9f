#!/usr/bin/python3
"""Commit latency around the event bodies' dictionary training: 3,000 events
(the synthetic campaign events of import_bench.py) in requests of 50 over
gRPC, one at a time, to a fresh server per binary, alternating the binaries
round by round. The request holding the 1,024th event is the one whose
commit takes the last sample for the dictionary; prints each run's slowest
request, which one it was, and the median.

Usage: /usr/bin/python3 bench/dict_training_bench.py --binary A [--binary B] [--rounds 3]
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import import_bench as ib  # noqa: E402

EVENTS = 3000
PER_REQUEST = 50


def requests(seed):
    pb = ib.stubs.load().analytics["events"][0]
    events = ib.make_events(EVENTS, False, seed)
    out = []
    for k in range(0, EVENTS, PER_REQUEST):
        req = pb.TrackEventsRequest()
        for e in events[k:k + PER_REQUEST]:
            ev = req.events.add(event_id=e["eventId"], event_type=e["eventType"],
                                event_name=e["eventName"])
            ev.timestamp.seconds, ev.timestamp.nanos = e["_ts"] // 1000, (e["_ts"] % 1000) * 10**6
            ev.properties.update(e["properties"])
        out.append(req.SerializeToString())
    return out


def run(binary, reqs):
    os.environ["ANALYTICSD"] = os.path.abspath(binary)
    server = ib.harness.Server(log_level="warn")
    server.start()
    try:
        ch = server.channel()
        call = ch.unary_unary("/analytics.v1.EventService/TrackEvents",
                              request_serializer=None, response_deserializer=None)
        lat = []
        for q in reqs:
            t0 = time.perf_counter()
            call(q, timeout=60)
            lat.append((time.perf_counter() - t0) * 1000)
        ch.close()
    finally:
        server.stop()
        server.cleanup()
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", action="append", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for r in range(args.rounds):
        reqs = requests(10 + r)
        for b in args.binary:
            lat = run(b, reqs)
            i = max(range(len(lat)), key=lambda j: lat[j])
            print("%s: slowest %.1f ms (events %d-%d), median %.2f ms" % (
                b, lat[i], i * PER_REQUEST, i * PER_REQUEST + PER_REQUEST - 1,
                statistics.median(lat)), flush=True)


if __name__ == "__main__":
    main()
