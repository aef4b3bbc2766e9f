#!/usr/bin/python3
"""Server CPU time per ingested event with and without ENCRYPTED_FIELDS.

Throughput on a shared machine moves with whatever else runs; the CPU time
the server itself spends per event (utime + stime from /proc, read before
and after) does much less. For each setting, interleaved over --rounds
rounds: a fresh analyticsd, a warm-up, then --batches gRPC TrackEvents
batches of 100 events (the properties of the ingest benchmark: campaignId,
groupId, messageType, charactersCount) from 4 client threads, or with
--mode stream the same batches as IngestEvents messages on 2 streams; prints the
server's CPU microseconds per event and the ratio encrypted/plain (lower
is better; its inverse bounds the throughput ratio when the server is
CPU-bound).

Usage:
  /usr/bin/python3 bench/encryption_cpu.py --binary build/server/analyticsd
      [--fields properties.campaignId,properties.groupId] [--rounds 3] [--batches 400]
      [--mode batch|stream]
"""

import argparse
import os
import statistics
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration", "python"))

import harness  # noqa: E402
import stubs  # noqa: E402

CLIENTS = 4
STREAMS = 2


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(binary, fields, batches, mode="batch"):
    os.environ["ANALYTICSD"] = binary
    env = {"ENCRYPTED_FIELDS": fields} if fields else {}
    server = harness.Server(env=env, log_level="warn").start()
    try:
        ns = stubs.load()
        pb, grpc_mod = ns.analytics["events"]
        stub = grpc_mod.EventServiceStub(server.channel())
        events = []
        for i in range(100):
            ev = pb.Event(event_name="message_sent", event_type="message")
            ev.properties.update({"campaignId": "c%d" % (i % 10), "groupId": "g%d" % (i % 7),
                                  "messageType": "text", "charactersCount": 150})
            events.append(ev)
        req = pb.TrackEventsRequest(events=events)
        msg = pb.IngestRequest(events=events)
        clients = CLIENTS if mode == "batch" else STREAMS

        def client(n):
            if mode == "batch":
                for _ in range(n):
                    stub.TrackEvents(req, timeout=30)
                return
            answers = 0
            for _ in stub.IngestEvents(iter([msg] * n), timeout=60):
                answers += 1

        for t in [threading.Thread(target=client, args=(10,)) for _ in range(2)]:
            t.start()
            t.join()
        before = cpu_seconds(server.proc.pid)
        threads = [threading.Thread(target=client, args=(batches // clients,))
                   for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        used = cpu_seconds(server.proc.pid) - before
        return used / (batches // clients * clients * 100) * 1e6
    finally:
        server.stop()
        server.cleanup()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", required=True)
    p.add_argument("--fields", default="properties.campaignId,properties.groupId")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batches", type=int, default=400)
    p.add_argument("--mode", choices=("batch", "stream"), default="batch")
    args = p.parse_args()
    ratios = []
    for r in range(args.rounds):
        order = (None, args.fields) if r % 2 == 0 else (args.fields, None)
        got = {f: run(os.path.abspath(args.binary), f, args.batches, args.mode) for f in order}
        ratio = got[args.fields] / got[None]
        ratios.append(ratio)
        print("round %d: plain %.1f us/event, encrypted %.1f us/event, encrypted/plain %.3f"
              % (r + 1, got[None], got[args.fields], ratio))
        sys.stdout.flush()
    print("median encrypted/plain server CPU per event over %d rounds: %.3f (throughput bound "
          "%.2fx)" % (args.rounds, statistics.median(ratios), 1 / statistics.median(ratios)))


if __name__ == "__main__":
    main()
